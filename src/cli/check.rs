//! `postdesk check [--connect]`: validate the configuration (exit 0, or 2
//! with `FILE:LINE:COL: message` lines), say which OAuth permissions each
//! pulled channel needs, and with `--connect` reach the configured store
//! (exit 1 when it cannot be reached).

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;

/// The whole `check` command: it needs no runtime, no store and no logging.
pub(super) fn check(path: &Path, connect: bool) -> ExitCode {
    match super::load_config(path, false) {
        Ok(c) => {
            println!(
                "{}: ok ({} channels, {} users, {} teams)",
                path.display(),
                c.channels.len(),
                c.users.len(),
                c.teams.len()
            );
            for note in c
                .channels
                .iter()
                .filter_map(crate::oauth::permissions_needed)
            {
                println!("note: {note}");
            }
            if connect {
                self::connect(&c)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(code) => code,
    }
}

/// `check --connect`: reach the configured store and say what is there.
fn connect(config: &Config) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt
            .block_on(crate::daemon::probe_store(config))
            .map_err(anyhow::Error::from),
        Err(e) => Err(anyhow::anyhow!("cannot start a runtime: {e}")),
    };
    match result {
        Ok(what) => {
            println!("store: {what}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("store: {e:#}");
            ExitCode::FAILURE
        }
    }
}
