//! `postdesk users list|available|away|password`: the agents, their
//! availability now (a run-time override routing follows) and their web
//! inbox password. Their API tokens are [`super::tokens`]'.

use anyhow::{Context, Result};

use super::exit::usage;
use super::{UsersCmd, open_store, print_json};
use crate::config::Config;

/// `users …`: the token commands go to [`super::tokens`].
pub(super) async fn users(cmd: UsersCmd, config: Config) -> Result<()> {
    let store = open_store(&config).await?;
    match cmd {
        UsersCmd::List { json } => {
            let live = crate::live::Live::new(config.clone());
            live.refresh(store.as_ref()).await?;
            let list: Vec<serde_json::Value> = config
                .users
                .iter()
                .map(|u| {
                    serde_json::json!({
                        "id": u.id,
                        "email": u.email,
                        // `full_name` as the API's /users says it; `name`
                        // kept for scripts written before.
                        "full_name": u.full_name(),
                        "name": u.full_name(),
                        "licensed": u.licensed,
                        "teams": u.teams,
                        "available": live.user_available(u),
                        "working_hours": u.working_hours.as_ref().map(|h| serde_json::json!({
                            "timezone": h.timezone_name,
                            "days": h.days.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>(),
                            "start": h.start.to_string(),
                            "end": h.end.to_string(),
                        })),
                    })
                })
                .collect();
            if json {
                return print_json(&list);
            }
            for u in list {
                println!(
                    "{:<12} {:<32} {:<10} {}",
                    u["id"].as_str().unwrap_or(""),
                    u["email"].as_str().unwrap_or(""),
                    if u["available"] == true {
                        "available"
                    } else {
                        "away"
                    },
                    if u["licensed"] == true {
                        ""
                    } else {
                        "(no licence)"
                    }
                );
            }
            Ok(())
        }
        UsersCmd::Password { user, role, clear } => {
            if config.user(&user).is_none() {
                return Err(usage(format!("unknown user {user:?}")));
            }
            let role = crate::store::TokenRole::parse(&role)
                .ok_or_else(|| usage(format!("unknown role {role:?}")))?;
            let hash = if clear {
                None
            } else {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the password from standard input")?;
                let password = line.trim_end_matches(['\r', '\n']);
                if password.chars().count() < 8 {
                    return Err(usage("the password must have at least 8 characters".into()));
                }
                if password.len() > crate::web::session::MAX_PASSWORD {
                    return Err(usage("the password is too long".into()));
                }
                Some(crate::web::session::hash_password(password).map_err(anyhow::Error::msg)?)
            };
            let record = crate::store::WebUser {
                password: hash,
                role,
            };
            store.set_web_user(user.clone(), record).await?;
            eprintln!(
                "web password of {user} {}, role {role}; their sessions ended",
                if clear { "cleared" } else { "set" }
            );
            Ok(())
        }
        UsersCmd::Available { id } => set_available(config, &id, true).await,
        UsersCmd::Away { id } => set_available(config, &id, false).await,
        UsersCmd::Token {
            user,
            role,
            expires,
        } => super::tokens::issue(&config, store.as_ref(), user, &role, expires).await,
        UsersCmd::Tokens { user, json } => {
            super::tokens::list(&config, store.as_ref(), user, json).await
        }
        UsersCmd::Revoke { user, id, .. } => {
            super::tokens::revoke(&config, store.as_ref(), user, id).await
        }
    }
}

/// `users available|away ID`: the API's and the web inbox's action, as the
/// operator.
async fn set_available(config: Config, id: &str, available: bool) -> Result<()> {
    let s = super::app(config).await?;
    let caller = crate::api::actions::Caller::Operator(None);
    let id = crate::api::actions::set_availability(&s, caller, id, available).await?;
    println!("{id} is {}", if available { "available" } else { "away" });
    Ok(())
}
