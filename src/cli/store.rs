//! `postdesk store copy`: this configuration's SQLite store into the empty
//! PostgreSQL store of another configuration, the daemon stopped
//! ([`crate::store::copy`] does the copy and the verification).

use std::path::Path;

use anyhow::Result;

use super::exit::usage;
use crate::config::Config;

/// `store copy`: this configuration's SQLite store into the PostgreSQL
/// store of `to_config`.
pub(super) async fn copy(config: &Config, to_config: &Path, batch_rows: u32) -> Result<()> {
    use crate::config::StoreKind;
    use crate::store::copy::{CopyOptions, Target, copy_store};
    if config.store.kind != StoreKind::Sqlite {
        return Err(usage(
            "this configuration's store is not SQLite: `store copy` runs with the configuration of the SQLite store to copy".into(),
        ));
    }
    let target = super::load_config(to_config, false).map_err(|_| {
        usage(format!(
            "{}: not a valid configuration (see above)",
            to_config.display()
        ))
    })?;
    if target.store.kind != StoreKind::Postgres {
        return Err(usage(format!(
            "{}: its [store] kind is not \"postgres\"",
            to_config.display()
        )));
    }
    let daemon = super::status::daemon_state(config).await;
    if daemon.state != "not running" {
        anyhow::bail!(
            "a postdesk daemon answers on http {} ({}): stop it before copying its store",
            daemon.http,
            daemon.state
        );
    }
    let file = target.store.url_file.clone().unwrap_or_default();
    let url = crate::store::postgres::load_url(&file).map_err(usage)?;
    let options = CopyOptions {
        batch_rows: batch_rows as usize,
        ..CopyOptions::default()
    };
    let mut say = |line: String| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let target = Target {
        config: url,
        ca_file: target.store.ca_file.as_deref(),
    };
    let report = copy_store(&config.store.path, target, &options, &mut say).await?;
    if report.already_copied {
        println!(
            "already copied, verified: {} tables, {} rows",
            report.tables, report.rows
        );
    } else {
        println!(
            "copied and verified: {} tables, {} rows. Next: start postdesk with {}",
            report.tables,
            report.rows,
            to_config.display()
        );
    }
    Ok(())
}
