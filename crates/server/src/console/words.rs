//! Errors said in words a person at the console can act on.

use appfence_core::Error;

pub fn in_words(e: &Error) -> String {
    match e {
        Error::ActiveRequestAlreadyExists => "Action is already in progress: this device \
            already has an open restrict or unrestrict action (shown on this page). Wait for \
            it to finish, or cancel it, then ask again."
            .to_string(),
        Error::MissingRequiredParameter(p) if p == "Comment" => {
            "A comment is required: say why (it is kept with the action).".to_string()
        }
        Error::Forbidden(m) => format!("You are not allowed to do this. {m}"),
        Error::Unauthorized(_) => "Your session has ended: sign in again.".to_string(),
        Error::TooManyRequests { retry_after, .. } => format!(
            "Too many requests of this kind from you: try again in {} seconds.",
            retry_after.as_secs().max(1)
        ),
        Error::Storage { .. } => format!(
            "Nothing was changed: {}.",
            e.public_message().trim_end_matches('.')
        ),
        Error::Internal(_) => {
            "Something went wrong on the server; nothing was changed. Try again, and tell \
             your administrator if it persists."
                .to_string()
        }
        other => other.public_message(),
    }
}
