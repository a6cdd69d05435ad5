//! The config keys: every global flag of `ktx` (`Cli`'s `global = true` arguments), read from
//! clap's own definition so that a new global flag is a key without code here. A key is spelt
//! as its long flag (`routerImage`, `api-timeout`); its aliases, kt-connect's camelCase or
//! kebab-case of either, and kt-connect's `GROUP.name` form (`global.image`,
//! `mesh.router-image`) name it too.
//!
//! Not here: where values come from ([`super::layers`]) and the file format ([`super::file`]).

use std::ffi::OsString;

use clap::{ArgAction, CommandFactory};

use crate::cli::Cli;

/// Global arguments that are not defaults one can set: `--profile` picks the layer itself.
const NOT_KEYS: &[&str] = &["profile"];

/// Keys that only make sense before ktx reaches the cluster, so a namespace's ConfigMap cannot
/// set them (it is read with them).
pub const CONNECTION_KEYS: &[&str] = &[
    "namespace",
    "context",
    "kubeconfig",
    "api_timeout",
    "api_connect_timeout",
];

/// How a key's value becomes command-line arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--flag=VALUE`.
    Value,
    /// `--flag` when the value is `true`.
    Switch,
    /// `--flag` VALUE times (`-v`).
    Count,
}

/// One key: a global flag.
#[derive(Debug, Clone)]
pub struct Key {
    /// clap's id (the field name): how [`clap::ArgMatches`] names it.
    pub id: String,
    /// The long flag without `--`: the key's canonical spelling.
    pub long: String,
    pub aliases: Vec<String>,
    pub kind: Kind,
    /// Its environment variable, if it has one.
    pub env: Option<String>,
    /// The first line of its `--help`.
    pub help: String,
}

/// All keys, in the order of `ktx --help`.
#[derive(Debug, Clone)]
pub struct Keys(Vec<Key>);

impl Keys {
    /// The global flags of `ktx`.
    pub fn of_cli() -> Keys {
        let cmd = Cli::command();
        let mut keys = Vec::new();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            let Some(long) = arg.get_long() else { continue };
            if !arg.is_global_set() || NOT_KEYS.contains(&id) {
                continue;
            }
            let kind = match arg.get_action() {
                ArgAction::Set | ArgAction::Append => Kind::Value,
                ArgAction::SetTrue => Kind::Switch,
                ArgAction::Count => Kind::Count,
                _ => continue,
            };
            keys.push(Key {
                id: id.to_string(),
                long: long.to_string(),
                aliases: arg
                    .get_all_aliases()
                    .unwrap_or_default()
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                kind,
                env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                help: arg
                    .get_help()
                    .map(|h| h.to_string().lines().next().unwrap_or_default().to_string())
                    .unwrap_or_default(),
            });
        }
        Keys(keys)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Key> {
        self.0.iter()
    }

    /// The key `name` names, in any accepted spelling.
    pub fn find(&self, name: &str) -> Option<&Key> {
        // kt-connect's `GROUP.name`: `global.image`, `mesh.router-image`.
        let name = name.rsplit('.').next().unwrap_or(name);
        let wanted = normal(name);
        if wanted.is_empty() {
            return None;
        }
        self.0
            .iter()
            .find(|k| normal(&k.long) == wanted || k.aliases.iter().any(|a| normal(a) == wanted))
    }

    /// The key of clap id `id`.
    pub fn by_id(&self, id: &str) -> Option<&Key> {
        self.0.iter().find(|k| k.id == id)
    }

    /// Every key's canonical spelling, for error messages.
    pub fn list(&self) -> String {
        self.0
            .iter()
            .map(|k| k.long.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `routerImage`, `router-image`, `router_image` and `ROUTERIMAGE` are one key.
fn normal(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

impl Key {
    /// The arguments that give this key `value`, or why they cannot.
    pub fn args(&self, value: &str) -> Result<Vec<OsString>, String> {
        let flag = format!("--{}", self.long);
        match self.kind {
            Kind::Value => Ok(vec![format!("{flag}={value}").into()]),
            Kind::Switch => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(vec![flag.into()]),
                "false" | "no" | "off" | "0" => Ok(Vec::new()),
                _ => Err(format!("{value:?} is not true or false")),
            },
            Kind::Count => {
                let n: u8 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("{value:?} is not a count (0, 1, 2…)"))?;
                Ok(vec![flag.into(); n as usize])
            }
        }
    }

    /// Checks `value` the way the command line would, without running anything.
    pub fn check(&self, value: &str) -> Result<(), String> {
        let mut argv: Vec<OsString> = vec!["ktx".into()];
        argv.extend(self.args(value)?);
        argv.push("status".into());
        Cli::command()
            .try_get_matches_from(argv)
            .map(drop)
            .map_err(|e| clap_reason(&e))
    }
}

/// clap's message without its `error: ` prefix and usage lines.
pub fn clap_reason(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}
