//! Exit codes: 0 ok, 1 runtime error, 2 bad configuration or usage — and
//! which errors are the command line's fault ([`Usage`], the store's or
//! the outbound path's "not found" and "invalid", and what the actions
//! shared with the API refuse with a 4xx).

use std::process::ExitCode;

use crate::store::StoreError;

/// A command line that names something that does not exist (a user, a
/// channel, a ticket, a contact) or asks for something invalid: exit 2, as
/// a bad configuration or clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct Usage(pub(super) String);

pub(super) fn usage(message: String) -> anyhow::Error {
    Usage(message).into()
}

/// 2 for usage errors (ours, the store's or the outbound path's "not
/// found" / "invalid", an action's 4xx refusal), 1 for everything else
/// (runtime errors, an action's 5xx).
pub(super) fn exit_code(e: &anyhow::Error) -> ExitCode {
    use crate::outbound::OutboundError;
    let usage = e.downcast_ref::<Usage>().is_some()
        || e.downcast_ref::<crate::api::error::ApiError>()
            .is_some_and(|a| a.status.is_client_error())
        || matches!(
            e.downcast_ref::<StoreError>(),
            Some(StoreError::NotFound(_) | StoreError::Invalid(_))
        )
        || matches!(
            e.downcast_ref::<OutboundError>(),
            Some(
                OutboundError::TicketNotFound(_)
                    | OutboundError::UnknownUser(_)
                    | OutboundError::Compose(_)
                    | OutboundError::TooLarge(_)
                    | OutboundError::Invalid(_)
                    | OutboundError::Store(StoreError::NotFound(_) | StoreError::Invalid(_))
            )
        );
    if usage {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}
