//! The `APPFENCE_*` environment, captured once so that settings resolution is a pure
//! function of its inputs (and tests need not touch the process environment).

use std::collections::HashMap;

pub const PREFIX: &str = "APPFENCE_";
/// Where systemd puts the credentials of `LoadCredential=` (read for the key file).
pub const ENV_CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";
/// Where the token cache of `appfence login` lives (XDG Base Directory).
pub const ENV_HOME: &str = "HOME";
pub const ENV_XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";
/// Whether a graphical session can show a browser for `appfence login`.
pub const ENV_DISPLAY: &str = "DISPLAY";
pub const ENV_WAYLAND_DISPLAY: &str = "WAYLAND_DISPLAY";

/// The variables read beside `APPFENCE_*`.
const OTHERS: [&str; 5] = [
    ENV_CREDENTIALS_DIRECTORY,
    ENV_HOME,
    ENV_XDG_CONFIG_HOME,
    ENV_DISPLAY,
    ENV_WAYLAND_DISPLAY,
];

#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// Every `APPFENCE_*` variable of this process that is valid UTF-8, systemd's
    /// `CREDENTIALS_DIRECTORY`, and those that locate the token cache and a display.
    pub fn from_process() -> Self {
        Env::from_pairs(
            std::env::vars().filter(|(k, _)| k.starts_with(PREFIX) || OTHERS.contains(&k.as_str())),
        )
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The variable's value; set-but-empty counts as unset, as shells make that easy
    /// to do by accident (`APPFENCE_PUBLIC_URL= appfence serve`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_are_unset() {
        let env = Env::from_pairs([("APPFENCE_A", "x"), ("APPFENCE_B", "")]);
        assert_eq!(env.get("APPFENCE_A"), Some("x"));
        assert_eq!(env.get("APPFENCE_B"), None);
        assert_eq!(env.get("APPFENCE_C"), None);
    }
}
