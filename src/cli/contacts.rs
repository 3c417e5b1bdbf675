//! `postdesk contacts list|owner`: the customers, and the owner
//! `contact_owner` routing gives their new tickets to.

use anyhow::Result;

use super::{open_store, print_json};
use crate::config::Config;

/// `contacts list`.
pub(super) async fn list(config: Config, json: bool) -> Result<()> {
    let store = open_store(&config).await?;
    let contacts = store.list_contacts().await?;
    if json {
        return print_json(&contacts);
    }
    println!("{:<40} {:<30} {:<10} TICKETS", "EMAIL", "NAME", "OWNER");
    for c in contacts {
        println!(
            "{:<40} {:<30} {:<10} {}",
            c.email,
            c.name.as_deref().unwrap_or("-"),
            c.owner.as_deref().unwrap_or("-"),
            c.tickets
        );
    }
    Ok(())
}

/// `contacts owner EMAIL USER|--clear` (`user` is `None` with `--clear`).
pub(super) async fn owner(config: Config, email: String, user: Option<String>) -> Result<()> {
    // The API's action (`PUT /api/v1/contacts/{email}/owner`), as the operator.
    let s = super::app(config).await?;
    let caller = crate::api::actions::Caller::Operator(None);
    let (email, created) =
        crate::api::actions::set_contact_owner(&s, caller, &email, user.clone()).await?;
    match (user, created) {
        (Some(u), true) => println!("contact {email} created, owned by {u}"),
        (Some(u), false) => println!("contact {email} owned by {u}"),
        (None, _) => println!("contact {email} has no owner"),
    }
    Ok(())
}
