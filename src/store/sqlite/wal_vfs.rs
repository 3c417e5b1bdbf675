//! A thin SQLite VFS over the platform's default one that turns each
//! commit's many small WAL writes into one `pwrite`.
//!
//! SQLite appends every WAL frame with two `write`s (its 24-byte header, then
//! the page), so a group commit of a few messages makes some 30 system calls
//! before its `fsync` — and on ext4 each costs ≈ 5 µs however small it is:
//! measured, the single largest item in the writer's time. This VFS keeps a
//! WAL file's consecutive writes in memory and hands them to the real file in
//! one write before anything can observe the file: a sync, a read, a size
//! query, a truncation, a file-control call or the close. Everything else is
//! the default VFS, called with its own file object.
//!
//! Why that is safe: in WAL mode other connections only read frames that the
//! wal-index publishes, and with `synchronous=FULL` (the only setting the
//! store uses; [`open`]'s callers check it) SQLite syncs the WAL before it
//! publishes a commit's frames — so they are in the file first. A crash loses
//! only what was never synced, exactly as without this layer. A failed write
//! of held bytes (a full disk) is answered to every later WAL call of the
//! transaction — even when a read triggered it, whose failure alone would not
//! end the transaction — so it cannot commit over the hole. What is still
//! held when the connection gives up the WAL's write lock belongs to a
//! transaction that did not commit (frames a large transaction spilled, then
//! rolled back): it is dropped there, never written later over frames
//! another writer has committed since. The same at close.
//!
//! The database file itself grows in 1 MiB steps (a checkpoint's size hint
//! extends it once) instead of by one `write` past its end per page: on ext4
//! such an extending write costs ≈ 14 µs against ≈ 2 µs for one inside the
//! file.
//!
//! Limits (each would make the reasoning above false):
//! - `synchronous` must stay FULL (or EXTRA) on every connection opened here:
//!   with NORMAL a commit does not sync, so its frames would stay held and be
//!   dropped at the write lock's release. The store checks it at open.
//! - At most one connection per thread may have an open write transaction:
//!   the held WAL is tracked in one thread-local slot. The store's writer and
//!   checkpointer are one connection on one thread each.
//! - No `psow=0` URI parameter on the database path: SQLite would then write
//!   the tail of a padding frame after its sync.
//!
//! Owns: registering the VFS once per process, the buffer of each open WAL
//! file and the database file's size steps. Must not: buffer anything but a
//! WAL file, or be used by a connection whose commits do not sync.

use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::Path;
use std::sync::OnceLock;

use rusqlite::{Connection, OpenFlags, ffi};

/// The name this VFS is registered under.
const NAME: &CStr = c"postdesk-wal";
/// Most bytes held before they are written anyway (a very large transaction).
const MAX_PENDING: usize = 4 << 20;
/// Most bytes per write: the unix VFS takes at most 128 KiB − 1 per call.
const MAX_WRITE: usize = 124 << 10;
/// The database file grows, and is cut back, in steps of this size.
const CHUNK: i64 = 1 << 20;

/// Open `path` through this VFS (registering it first). Only for a
/// connection that keeps `synchronous=FULL`: the caller sets that pragma
/// before its first write.
pub(super) fn open(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    match registered() {
        Some(name) => Connection::open_with_flags_and_vfs(path, flags, name),
        // No default VFS to wrap (cannot happen with the bundled SQLite):
        // plain writes, same results.
        None => Connection::open_with_flags(path, flags),
    }
}

/// Registers the VFS on first use; `None` if SQLite has no default VFS.
fn registered() -> Option<&'static CStr> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS, which lives
        // for the whole process; our copy is leaked, so it does too, as
        // sqlite3_vfs_register requires.
        unsafe {
            ffi::sqlite3_initialize();
            let inner = ffi::sqlite3_vfs_find(std::ptr::null());
            if inner.is_null() {
                return false;
            }
            let mut vfs: ffi::sqlite3_vfs = *inner;
            vfs.pNext = std::ptr::null_mut();
            vfs.zName = NAME.as_ptr();
            vfs.pAppData = inner.cast();
            vfs.szOsFile = (std::mem::size_of::<File>() as c_int) + (*inner).szOsFile;
            vfs.xOpen = Some(x_open);
            vfs.xDelete = Some(x_delete);
            vfs.xAccess = Some(x_access);
            vfs.xFullPathname = Some(x_full_pathname);
            let vfs = Box::leak(Box::new(vfs));
            ffi::sqlite3_vfs_register(vfs, 0) == ffi::SQLITE_OK
        }
    });
    ok.then_some(NAME)
}

/// Our file object: SQLite allocates `szOsFile` bytes, this struct first and
/// the default VFS's own file object right after it.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// Writes not yet handed to `inner` (WAL files only; null otherwise).
    pending: *mut Pending,
    /// The main database file: its size moves in `CHUNK` steps.
    main_db: bool,
}

thread_local! {
    /// The WAL file this thread's connection holds unsynced writes for: set
    /// when it starts holding some, cleared as soon as it holds none (written
    /// at a sync, dropped at the write lock's release or at close). A
    /// connection is used by one thread at a time and holds writes only under
    /// the WAL's write lock, so this never points to a file closed elsewhere.
    static HOLDING: Cell<*mut File> = const { Cell::new(std::ptr::null_mut()) };
}

/// The wal-index lock slot of the WAL's write lock (SQLite's WAL_WRITE_LOCK).
const WAL_WRITE_LOCK: c_int = 0;

/// Drop what `f` holds without writing it.
unsafe fn discard(f: *mut File) {
    // SAFETY: `f` is an open file of ours (see HOLDING); `pending` is owned
    // by it.
    unsafe {
        let pending = (*f).pending;
        if !pending.is_null() {
            if !(*pending).bytes.is_empty() {
                tracing::debug!(
                    bytes = (*pending).bytes.len(),
                    "uncommitted WAL writes dropped"
                );
                (*pending).bytes.clear();
            }
            (*pending).failed = ffi::SQLITE_OK;
        }
    }
    let_go(f);
}

/// Consecutive writes starting at `start`.
#[derive(Default)]
struct Pending {
    start: i64,
    bytes: Vec<u8>,
    /// A write of held bytes failed (full disk): SQLite believes those frames
    /// are in the file. Every WAL operation answers this error until the
    /// write lock is released (the transaction is over), so it cannot commit.
    failed: c_int,
}

unsafe fn inner_vfs(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: pAppData was set to the default VFS at registration.
    unsafe { (*vfs).pAppData.cast() }
}

unsafe extern "C" fn x_delete(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync: c_int,
) -> c_int {
    // SAFETY: forwarding to the default VFS with its own object.
    unsafe {
        let inner = inner_vfs(vfs);
        match (*inner).xDelete {
            Some(f) => f(inner, name, sync),
            None => ffi::SQLITE_IOERR_DELETE,
        }
    }
}

unsafe extern "C" fn x_access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    // SAFETY: forwarding to the default VFS with its own object.
    unsafe {
        let inner = inner_vfs(vfs);
        match (*inner).xAccess {
            Some(f) => f(inner, name, flags, out),
            None => ffi::SQLITE_IOERR_ACCESS,
        }
    }
}

unsafe extern "C" fn x_full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: forwarding to the default VFS with its own object.
    unsafe {
        let inner = inner_vfs(vfs);
        match (*inner).xFullPathname {
            Some(f) => f(inner, name, n, out),
            None => ffi::SQLITE_CANTOPEN,
        }
    }
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite gives us szOsFile bytes at `file` (aligned for any
    // type); the inner file object starts right after our struct, whose
    // size is a multiple of 8.
    unsafe {
        let this = file.cast::<File>();
        let inner_file = file
            .cast::<u8>()
            .add(std::mem::size_of::<File>())
            .cast::<ffi::sqlite3_file>();
        std::ptr::write(
            this,
            File {
                base: ffi::sqlite3_file {
                    pMethods: std::ptr::null(),
                },
                inner: inner_file,
                pending: std::ptr::null_mut(),
                main_db: flags & ffi::SQLITE_OPEN_MAIN_DB != 0,
            },
        );
        let inner = inner_vfs(vfs);
        let Some(open) = (*inner).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        let rc = open(inner, name, inner_file, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // SQLite only closes a file whose methods are set: close the
            // inner one ourselves if it got that far.
            let methods = (*inner_file).pMethods;
            if !methods.is_null()
                && let Some(close) = (*methods).xClose
            {
                close(inner_file);
            }
            return rc;
        }
        if flags & ffi::SQLITE_OPEN_WAL != 0 {
            (*this).pending = Box::into_raw(Box::default());
        }
        (*this).base.pMethods = &METHODS;
        ffi::SQLITE_OK
    }
}

/// The inner file's methods.
unsafe fn methods(
    f: *mut ffi::sqlite3_file,
) -> (*mut ffi::sqlite3_file, &'static ffi::sqlite3_io_methods) {
    // SAFETY: `f` is one of our files, opened successfully, so `inner` is an
    // open file of the default VFS whose methods table is static.
    unsafe {
        let inner = (*f.cast::<File>()).inner;
        (inner, &*(*inner).pMethods)
    }
}

/// Hand pending writes to the inner file. Returns the inner write's code.
unsafe fn flush(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: see `methods`; `pending` is null or owned by this file.
    unsafe {
        let pending = (*f.cast::<File>()).pending;
        if pending.is_null() {
            return ffi::SQLITE_OK;
        }
        if (*pending).failed != ffi::SQLITE_OK {
            return (*pending).failed;
        }
        if (*pending).bytes.is_empty() {
            return ffi::SQLITE_OK;
        }
        let (inner, m) = methods(f);
        let p = &mut *pending;
        let mut rc = ffi::SQLITE_IOERR_WRITE;
        if let Some(write) = m.xWrite {
            rc = ffi::SQLITE_OK;
            let mut at = p.start;
            for chunk in p.bytes.chunks(MAX_WRITE) {
                rc = write(inner, chunk.as_ptr().cast(), chunk.len() as c_int, at);
                if rc != ffi::SQLITE_OK {
                    break;
                }
                at += chunk.len() as i64;
            }
        }
        p.bytes.clear();
        if rc == ffi::SQLITE_OK {
            let_go(f.cast::<File>());
        } else {
            // SQLite thinks these frames are in the file. The call that
            // triggered this may be a read, whose failure does not end the
            // transaction: keep failing until the write lock is released.
            p.failed = rc;
        }
        rc
    }
}

/// `f` holds nothing any more: forget it as this thread's holder, so the
/// thread-local never outlives a hold (a connection may move to another
/// thread between transactions, and be closed there).
fn let_go(f: *mut File) {
    HOLDING.with(|h| {
        if h.get() == f {
            h.set(std::ptr::null_mut());
        }
    });
}

/// Flush, then run `then` unless the flush failed.
unsafe fn flushed(f: *mut ffi::sqlite3_file, then: impl FnOnce() -> c_int) -> c_int {
    // SAFETY: as `flush`.
    let rc = unsafe { flush(f) };
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    then()
}

unsafe extern "C" fn x_close(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes each successfully opened file once.
    unsafe {
        let this = f.cast::<File>();
        // Anything still held was never committed (a commit syncs first).
        let_go(this);
        if !(*this).pending.is_null() {
            discard(this);
            drop(Box::from_raw((*this).pending));
            (*this).pending = std::ptr::null_mut();
        }
        let (inner, m) = methods(f);
        m.xClose.map(|c| c(inner)).unwrap_or(ffi::SQLITE_OK)
    }
}

unsafe extern "C" fn x_read(
    f: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    n: c_int,
    off: i64,
) -> c_int {
    // SAFETY: forwarding SQLite's own arguments to the inner file.
    unsafe {
        flushed(f, || {
            let (inner, m) = methods(f);
            m.xRead
                .map(|r| r(inner, buf, n, off))
                .unwrap_or(ffi::SQLITE_IOERR_READ)
        })
    }
}

unsafe extern "C" fn x_write(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    n: c_int,
    off: i64,
) -> c_int {
    // SAFETY: `buf` holds `n` bytes (SQLite's contract); `pending` is owned
    // by this file.
    unsafe {
        let pending = (*f.cast::<File>()).pending;
        let len = usize::try_from(n).unwrap_or(0);
        if !pending.is_null() && (*pending).failed != ffi::SQLITE_OK {
            return (*pending).failed;
        }
        if !pending.is_null() && len < MAX_PENDING {
            let held = (*pending).bytes.len();
            let follows = (*pending).start + held as i64 == off;
            if held > 0 && (!follows || held + len > MAX_PENDING) {
                let rc = flush(f);
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
            }
            HOLDING.with(|h| h.set(f.cast::<File>()));
            let p = &mut *pending;
            if p.bytes.is_empty() {
                p.start = off;
            }
            p.bytes
                .extend_from_slice(std::slice::from_raw_parts(buf.cast::<u8>(), len));
            return ffi::SQLITE_OK;
        }
        flushed(f, || {
            let (inner, m) = methods(f);
            m.xWrite
                .map(|w| w(inner, buf, n, off))
                .unwrap_or(ffi::SQLITE_IOERR_WRITE)
        })
    }
}

unsafe extern "C" fn x_truncate(f: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: forwarding to the inner file.
    unsafe {
        // The database keeps the room it grew into (SQLite reads its size
        // from the header, as with its own SQLITE_FCNTL_CHUNK_SIZE).
        let size = if (*f.cast::<File>()).main_db {
            round_up(size)
        } else {
            size
        };
        flushed(f, || {
            let (inner, m) = methods(f);
            m.xTruncate
                .map(|t| t(inner, size))
                .unwrap_or(ffi::SQLITE_IOERR_TRUNCATE)
        })
    }
}

unsafe extern "C" fn x_sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: forwarding to the inner file.
    unsafe {
        flushed(f, || {
            let (inner, m) = methods(f);
            m.xSync
                .map(|s| s(inner, flags))
                .unwrap_or(ffi::SQLITE_IOERR_FSYNC)
        })
    }
}

unsafe extern "C" fn x_file_size(f: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: forwarding to the inner file.
    unsafe {
        flushed(f, || {
            let (inner, m) = methods(f);
            m.xFileSize
                .map(|s| s(inner, size))
                .unwrap_or(ffi::SQLITE_IOERR_FSTAT)
        })
    }
}

unsafe extern "C" fn x_lock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: forwarding to the inner file.
    unsafe {
        let (inner, m) = methods(f);
        m.xLock
            .map(|l| l(inner, level))
            .unwrap_or(ffi::SQLITE_IOERR_LOCK)
    }
}

unsafe extern "C" fn x_unlock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: forwarding to the inner file.
    unsafe {
        let (inner, m) = methods(f);
        m.xUnlock
            .map(|u| u(inner, level))
            .unwrap_or(ffi::SQLITE_IOERR_UNLOCK)
    }
}

unsafe extern "C" fn x_check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: forwarding to the inner file.
    unsafe {
        let (inner, m) = methods(f);
        m.xCheckReservedLock
            .map(|c| c(inner, out))
            .unwrap_or(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK)
    }
}

/// `size` rounded up to a whole number of chunks.
fn round_up(size: i64) -> i64 {
    (size.saturating_add(CHUNK - 1) / CHUNK).saturating_mul(CHUNK)
}

unsafe extern "C" fn x_file_control(
    f: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: forwarding to the inner file; for SIZE_HINT `arg` points to
    // the i64 size SQLite is about to write up to.
    unsafe {
        flushed(f, || {
            let (inner, m) = methods(f);
            // A checkpoint is about to write pages past the end of the
            // database. Each write that extends a file costs ext4 far more
            // than one inside it (≈ 14 µs against 2 µs per page, measured
            // here), so extend it once, by a whole chunk: the pages land in
            // a hole that is already inside the file.
            if op == ffi::SQLITE_FCNTL_SIZE_HINT
                && (*f.cast::<File>()).main_db
                && !arg.is_null()
                && let (Some(size_of), Some(truncate)) = (m.xFileSize, m.xTruncate)
            {
                let wanted = *arg.cast::<i64>();
                let mut now = 0i64;
                if size_of(inner, &mut now) == ffi::SQLITE_OK && wanted > now {
                    let rc = truncate(inner, round_up(wanted));
                    if rc != ffi::SQLITE_OK {
                        return rc;
                    }
                }
            }
            m.xFileControl
                .map(|c| c(inner, op, arg))
                .unwrap_or(ffi::SQLITE_NOTFOUND)
        })
    }
}

unsafe extern "C" fn x_sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwarding to the inner file.
    unsafe {
        let (inner, m) = methods(f);
        m.xSectorSize.map(|s| s(inner)).unwrap_or(4096)
    }
}

unsafe extern "C" fn x_device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwarding to the inner file.
    unsafe {
        let (inner, m) = methods(f);
        m.xDeviceCharacteristics.map(|d| d(inner)).unwrap_or(0)
    }
}

unsafe extern "C" fn x_shm_map(
    f: *mut ffi::sqlite3_file,
    page: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: forwarding to the inner file.
    unsafe {
        let (inner, m) = methods(f);
        match m.xShmMap {
            Some(map) if m.iVersion >= 2 => map(inner, page, size, extend, out),
            _ => ffi::SQLITE_IOERR_SHMMAP,
        }
    }
}

unsafe extern "C" fn x_shm_lock(
    f: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: forwarding to the inner file; HOLDING is null or an open WAL
    // file of this thread's connection.
    unsafe {
        // Giving up the write lock: what is still held did not commit.
        if offset == WAL_WRITE_LOCK && flags == ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE {
            let held = HOLDING.with(|h| h.replace(std::ptr::null_mut()));
            if !held.is_null() {
                discard(held);
            }
        }
        let (inner, m) = methods(f);
        match m.xShmLock {
            Some(lock) if m.iVersion >= 2 => lock(inner, offset, n, flags),
            _ => ffi::SQLITE_IOERR_SHMLOCK,
        }
    }
}

unsafe extern "C" fn x_shm_barrier(f: *mut ffi::sqlite3_file) {
    // SAFETY: forwarding to the inner file.
    unsafe {
        let (inner, m) = methods(f);
        if let Some(barrier) = m.xShmBarrier.filter(|_| m.iVersion >= 2) {
            barrier(inner);
        }
    }
}

unsafe extern "C" fn x_shm_unmap(f: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: forwarding to the inner file.
    unsafe {
        let (inner, m) = methods(f);
        match m.xShmUnmap {
            Some(unmap) if m.iVersion >= 2 => unmap(inner, delete),
            _ => ffi::SQLITE_OK,
        }
    }
}

unsafe extern "C" fn x_fetch(
    f: *mut ffi::sqlite3_file,
    off: i64,
    n: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: forwarding to the inner file; without memory mapping the
    // answer "no mapping" (null, OK) makes SQLite read instead.
    unsafe {
        flushed(f, || {
            let (inner, m) = methods(f);
            match m.xFetch {
                Some(fetch) if m.iVersion >= 3 => fetch(inner, off, n, out),
                _ => {
                    *out = std::ptr::null_mut();
                    ffi::SQLITE_OK
                }
            }
        })
    }
}

unsafe extern "C" fn x_unfetch(f: *mut ffi::sqlite3_file, off: i64, p: *mut c_void) -> c_int {
    // SAFETY: forwarding to the inner file.
    unsafe {
        let (inner, m) = methods(f);
        match m.xUnfetch {
            Some(unfetch) if m.iVersion >= 3 => unfetch(inner, off, p),
            _ => ffi::SQLITE_OK,
        }
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(path: &Path) -> Connection {
        let c = open(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )
        .expect("open through the VFS");
        let mode: String = c
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .expect("wal");
        assert_eq!(mode, "wal");
        c.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body BLOB NOT NULL);",
        )
        .expect("schema");
        c
    }

    /// Rows of `t` as a plain connection opened afresh sees them, after
    /// checking the database's integrity.
    fn reopened_rows(path: &Path) -> i64 {
        let fresh = Connection::open(path).expect("fresh");
        let ok: String = fresh
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("check");
        assert_eq!(ok, "ok");
        fresh
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .expect("count")
    }

    fn body(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
    }

    /// (id, length, checksum) of every row, as a plain connection sees it.
    fn rows(path: &Path) -> Vec<(i64, usize, u64)> {
        let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("plain reader");
        let mut st = c
            .prepare("SELECT id, body FROM t ORDER BY id")
            .expect("select");
        st.query_map([], |r| {
            let b: Vec<u8> = r.get(1)?;
            let sum = b
                .iter()
                .fold(0u64, |a, &x| a.wrapping_mul(31).wrapping_add(x as u64));
            Ok((r.get(0)?, b.len(), sum))
        })
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows")
    }

    fn expected(sizes: &[usize]) -> Vec<(i64, usize, u64)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let sum = body(i, len)
                    .iter()
                    .fold(0u64, |a, &x| a.wrapping_mul(31).wrapping_add(x as u64));
                ((i + 1) as i64, len, sum)
            })
            .collect()
    }

    // Small rows, a row larger than one write (124 KiB) and one larger than
    // what is ever held (4 MiB), each in its own transaction, then several in
    // one.
    const SIZES: [usize; 8] = [10, 5_000, 200_000, 5_000_000, 3, 70_000, 4_100, 9];

    fn fill(c: &Connection) {
        for (i, len) in SIZES.iter().enumerate().take(5) {
            c.execute(
                "INSERT INTO t (id, body) VALUES (?1, ?2)",
                rusqlite::params![i as i64 + 1, body(i, *len)],
            )
            .expect("insert");
        }
        c.execute_batch("BEGIN").expect("begin");
        for (i, len) in SIZES.iter().enumerate().skip(5) {
            c.execute(
                "INSERT INTO t (id, body) VALUES (?1, ?2)",
                rusqlite::params![i as i64 + 1, body(i, *len)],
            )
            .expect("insert");
        }
        c.execute_batch("COMMIT").expect("commit");
    }

    #[test]
    fn other_connections_read_every_commit_made_through_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        let c = writer(&path);
        fill(&c);
        assert_eq!(
            rows(&path),
            expected(&SIZES),
            "a plain connection reads what was committed"
        );
        // The writer reads its own WAL too (a checkpoint reads every frame).
        let (busy, log, done): (i64, i64, i64) = c
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .expect("checkpoint");
        assert_eq!((busy, log, done), (0, 0, 0), "checkpointed and truncated");
        let ok: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("check");
        assert_eq!(ok, "ok");
        drop(c);
        assert_eq!(
            rows(&path),
            expected(&SIZES),
            "the same after the checkpoint"
        );
    }

    #[test]
    fn a_commit_is_in_the_files_when_it_returns() {
        // Copy the files while the writer is still open — what a crash right
        // after COMMIT would leave — and open the copy.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        let c = writer(&path);
        fill(&c);
        let copy = dir.path().join("copy.sqlite");
        std::fs::copy(&path, &copy).expect("copy db");
        std::fs::copy(
            dir.path().join("db.sqlite-wal"),
            dir.path().join("copy.sqlite-wal"),
        )
        .expect("copy wal");
        drop(c);
        assert_eq!(
            rows(&copy),
            expected(&SIZES),
            "every committed row recovered from the copy"
        );
    }

    #[test]
    fn a_rolled_back_spill_never_lands_on_another_writers_frames() {
        // A transaction larger than the page cache spills frames to the WAL
        // before it commits; rolled back, those held bytes must not be written
        // later over frames another connection committed meanwhile.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        let c = writer(&path);
        let _: i64 = c
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .expect("checkpoint");
        c.execute_batch("PRAGMA cache_size = 20; BEGIN")
            .expect("begin");
        for i in 0..40 {
            c.execute("INSERT INTO t (body) VALUES (?1)", [body(i, 20_000)])
                .expect("insert");
        }
        c.execute_batch("ROLLBACK").expect("rollback");
        // Another writer (as the CLI is) commits at the same WAL offsets.
        let other = Connection::open(&path).expect("other");
        other
            .execute_batch("PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0")
            .expect("pragmas");
        for i in 0..200 {
            other
                .execute("INSERT INTO t (body) VALUES (?1)", [body(i, 100)])
                .expect("insert");
        }
        // Our connection reads, then closes while the other is still open.
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 200);
        drop(c);
        assert_eq!(reopened_rows(&path), 200);
        drop(other);
    }

    #[test]
    fn a_thread_forgets_a_wal_file_once_it_holds_nothing() {
        // The writer's connection is opened (and migrated) on one thread and
        // used and closed on another: the opening thread must not keep a
        // pointer to its WAL file past a commit.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        let c = writer(&path);
        c.execute("INSERT INTO t (body) VALUES (?1)", [body(1, 5000)])
            .expect("insert");
        assert!(
            HOLDING.with(|h| h.get().is_null()),
            "still set after a commit"
        );
        c.execute_batch("PRAGMA cache_size = 20; BEGIN")
            .expect("begin");
        for i in 0..40 {
            c.execute("INSERT INTO t (body) VALUES (?1)", [body(i, 20_000)])
                .expect("insert");
        }
        assert!(!HOLDING.with(|h| h.get().is_null()), "a spill is held");
        c.execute_batch("ROLLBACK").expect("rollback");
        assert!(
            HOLDING.with(|h| h.get().is_null()),
            "still set after a rollback"
        );
        std::thread::spawn(move || drop(c))
            .join()
            .expect("closed elsewhere");
    }

    /// A 16 MB tmpfs at `dir` (root only, as the disk-full tests need).
    struct Tmpfs(std::path::PathBuf);
    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }

    #[test]
    fn a_full_disk_under_held_frames_never_commits_over_the_hole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mnt = dir.path().join("small");
        std::fs::create_dir_all(&mnt).expect("mkdir");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(&mnt)
            .status()
            .expect("mount");
        assert!(
            mounted.success(),
            "mounting a tmpfs needs root (simulates a full disk)"
        );
        let _fs = Tmpfs(mnt.clone());
        let path = mnt.join("db.sqlite");
        let c = writer(&path);
        c.execute_batch("CREATE TABLE t2 (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
            .expect("t2");
        c.execute("INSERT INTO t (id, body) VALUES (0, x'00')", [])
            .expect("row 0");
        // Fill the disk, leaving 128 KB.
        let filler = mnt.join("filler");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&filler).expect("filler");
            let block = vec![1u8; 65536];
            let mut n = 0u64;
            while let Ok(k) = f.write(&block) {
                if k == 0 {
                    break;
                }
                n += k as u64;
            }
            f.set_len(n.saturating_sub(128 << 10)).expect("shrink");
        }
        // A batch whose spilled frames are held; a later statement reads one
        // back, so the held bytes are written — and the disk is full.
        c.execute_batch("PRAGMA cache_size = 20; BEGIN; SAVEPOINT a")
            .expect("begin");
        for i in 1..=40 {
            if c.execute(
                "INSERT INTO t (id, body) VALUES (?1, ?2)",
                rusqlite::params![i, body(i as usize, 20_000)],
            )
            .is_err()
            {
                break;
            }
        }
        c.execute_batch("RELEASE a; SAVEPOINT b")
            .expect("savepoint");
        let read_back = c.execute("INSERT INTO t2 (id, body) SELECT id, body FROM t", []);
        assert!(read_back.is_err(), "the disk was not full");
        if !c.is_autocommit() {
            c.execute_batch("ROLLBACK TO b; RELEASE b")
                .expect("statement undone");
            // Room again, and another job of the same group commit.
            std::fs::remove_file(&filler).expect("room");
            let _ = c.execute("INSERT INTO t (id, body) VALUES (1000, x'0102')", []);
            assert!(
                c.execute_batch("COMMIT").is_err(),
                "committed over lost frames"
            );
            if !c.is_autocommit() {
                c.execute_batch("ROLLBACK").expect("rollback");
            }
        } else {
            std::fs::remove_file(&filler).expect("room");
        }
        drop(c);
        assert_eq!(
            reopened_rows(&path),
            1,
            "only the row committed before the batch"
        );
    }

    #[test]
    fn the_database_file_grows_in_whole_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        let c = writer(&path);
        fill(&c);
        let _: i64 = c
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(0))
            .expect("checkpoint");
        let pages: i64 = c
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .expect("pages");
        let page: i64 = c
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .expect("size");
        let len = std::fs::metadata(&path).expect("stat").len() as i64;
        assert_eq!(len % CHUNK, 0, "file size {len} is whole chunks");
        assert!(len >= pages * page, "file {len} holds the {pages} pages");
        assert!(
            len < pages * page + CHUNK,
            "no more than one chunk of room: {len}"
        );
        // A truncating checkpoint keeps the room, and the file stays valid
        // for a plain connection (SQLite reads the size from the header).
        let _: i64 = c
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .expect("checkpoint");
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len() as i64 % CHUNK,
            0
        );
        drop(c);
        assert_eq!(reopened_rows(&path), SIZES.len() as i64);
    }
}
