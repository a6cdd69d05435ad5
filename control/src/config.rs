//! Defaults for ktx's global flags that a developer or a team sets once: `ktx config`, named
//! profiles, and the namespace's `ktx-defaults` ConfigMap. Every global flag is a key
//! ([`keys`]); a value's layer, first match wins:
//!
//! flag > environment variable > profile (`--profile`/`$KTX_PROFILE`) > config file >
//! namespace ConfigMap `ktx-defaults` > built-in default.
//!
//! How: the command line is parsed once; each key still at its built-in default (or unset) gets
//! its value from the first layer that has one, given as `--flag=VALUE` in front of the
//! command line, which is then parsed again ([`layers`]). So a value from a file is checked by
//! the same parser as a flag, and a new global flag needs no code here.
//!
//! Not here: the flags themselves ([`crate::cli`]).

pub mod command;
pub mod file;
pub mod keys;
pub mod layers;
pub mod namespace;

pub use layers::{resolve, resolve_in, Layers, Resolved, Source};

/// Why ktx's configuration cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{at}: not valid YAML: {reason}; fix or remove it (`ktx config unset --all`)")]
    Syntax { at: String, reason: String },

    #[error("{at}: unknown key {key:?}; keys are the global flags: {known}")]
    UnknownKey {
        at: String,
        key: String,
        known: String,
    },

    #[error("{at}: {key}: {reason}")]
    BadValue {
        at: String,
        key: String,
        reason: String,
    },

    #[error("{name:?} is not a profile name: use letters, digits, '-', '_' and '.' (not first)")]
    BadProfileName { name: String },

    #[error("no profile {name:?} (saved profiles: {known}); save one with `ktx config profile save {name}`")]
    NoProfile { name: String, known: String },

    #[error("{0}")]
    CommandLine(String),

    #[error("neither $XDG_CONFIG_HOME nor $HOME is set, so ktx has no config file")]
    NoConfigDir,
}

#[cfg(test)]
mod tests;
