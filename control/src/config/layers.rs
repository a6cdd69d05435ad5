//! Which layer gives each key its value, and the command line that results: the user's
//! arguments with `--flag=VALUE` put in front for every key a layer sets.
//!
//! flag > environment > profile > file > namespace ConfigMap > built-in default. clap decides
//! the first two (it reads the environment variables named in [`crate::cli`]); a key is
//! filled from a layer only when clap found it at its default or unset.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::file::{self, Paths, Values};
use super::keys::{Key, Keys, CONNECTION_KEYS};
use super::ConfigError;
use crate::cli::Cli;

/// Where a key's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    /// The environment variable's name.
    Env(String),
    /// The profile's name.
    Profile(String),
    /// The config file's path.
    File(String),
    /// `NAMESPACE/ktx-defaults`.
    Namespace(String),
    Default,
    /// No value (an optional flag nobody set).
    Unset,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => write!(f, "flag"),
            Source::Env(v) => write!(f, "environment ${v}"),
            Source::Profile(p) => write!(f, "profile {p}"),
            Source::File(p) => write!(f, "file {p}"),
            Source::Namespace(cm) => write!(f, "ConfigMap {cm}"),
            Source::Default => write!(f, "built-in default"),
            Source::Unset => write!(f, "unset"),
        }
    }
}

/// The parsed command line and how it came to be.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub cli: Cli,
    pub layers: Layers,
}

/// The layers' contribution to one command line.
#[derive(Debug, Clone)]
pub struct Layers {
    keys: Keys,
    /// The command line as given.
    argv: Vec<OsString>,
    /// What the layers add in front of it.
    added: Vec<OsString>,
    /// By clap id.
    sources: BTreeMap<String, Source>,
    /// The resulting values, by clap id (`,`-joined when several).
    values: BTreeMap<String, String>,
    /// Where ktx keeps its files, if anywhere.
    pub paths: Option<Paths>,
    /// The active profile.
    pub profile: Option<String>,
    /// Why the file or profile was left out: only for `ktx config`, which must run to repair
    /// them; every other command fails instead.
    pub problem: Option<String>,
}

/// Why a command line cannot be resolved.
#[derive(Debug)]
pub enum ResolveError {
    /// clap's own error (or `--help`, `--version`): `exit()` it as clap would.
    Clap(clap::Error),
    Config(ConfigError),
}

impl ResolveError {
    /// As a [`ConfigError`] (clap's message, when clap refused the command line).
    pub fn into_config(self) -> ConfigError {
        match self {
            ResolveError::Clap(e) => ConfigError::CommandLine(super::keys::clap_reason(&e)),
            ResolveError::Config(e) => e,
        }
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Clap(e) => f.write_str(&super::keys::clap_reason(e)),
            ResolveError::Config(e) => write!(f, "{e}"),
        }
    }
}

impl From<ConfigError> for ResolveError {
    fn from(e: ConfigError) -> Self {
        ResolveError::Config(e)
    }
}

/// [`resolve_in`] with the files of `$XDG_CONFIG_HOME/ktx` (or `~/.config/ktx`).
pub fn resolve<I, T>(argv: I) -> Result<Resolved, ResolveError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    resolve_in(argv, Paths::from_env())
}

/// Parses `argv` (program name first) with the profile and file layers of `paths`.
pub fn resolve_in<I, T>(argv: I, paths: Option<Paths>) -> Result<Resolved, ResolveError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let keys = Keys::of_cli();
    let first = Cli::command()
        .try_get_matches_from(&argv)
        .map_err(ResolveError::Clap)?;
    let is_config = first.subcommand_name() == Some("config");
    let profile = first.get_one::<String>("profile").cloned();
    let (file_values, profile_values, problem) = match load(&paths, profile.as_deref(), &keys) {
        Ok((f, p)) => (f, p, None),
        Err(e) if is_config => (Values::default(), Values::default(), Some(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let mut layers = Layers {
        keys,
        argv,
        added: Vec::new(),
        sources: BTreeMap::new(),
        values: BTreeMap::new(),
        profile: profile.clone(),
        problem,
        paths: paths.clone(),
    };
    let file_name = paths
        .as_ref()
        .map(|p| p.file().display().to_string())
        .unwrap_or_default();
    for key in layers.keys.clone().iter() {
        let source = match first.value_source(&key.id) {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env(key.env.clone().unwrap_or_default()),
            other => {
                let from_layer = [
                    (
                        &profile_values,
                        Source::Profile(profile.clone().unwrap_or_default()),
                    ),
                    (&file_values, Source::File(file_name.clone())),
                ]
                .into_iter()
                .find_map(|(values, source)| {
                    values.get(&key.id).map(|e| (e.value.clone(), source))
                });
                match from_layer {
                    Some((value, source)) => {
                        layers.add(key, &value, &source.to_string())?;
                        source
                    }
                    None if other == Some(ValueSource::DefaultValue) => Source::Default,
                    None => Source::Unset,
                }
            }
        };
        layers.sources.insert(key.id.clone(), source);
    }
    let cli = layers.parse()?;
    Ok(Resolved { cli, layers })
}

/// The file's and the active profile's values.
fn load(
    paths: &Option<Paths>,
    profile: Option<&str>,
    keys: &Keys,
) -> Result<(Values, Values), ConfigError> {
    let Some(paths) = paths else {
        return match profile {
            Some(_) => Err(ConfigError::NoConfigDir),
            None => Ok((Values::default(), Values::default())),
        };
    };
    let file = file::load(&paths.file(), keys)?;
    let profile = match profile {
        None => Values::default(),
        Some(name) => {
            let path = paths.profile(name)?;
            if !path.exists() {
                return Err(ConfigError::NoProfile {
                    name: name.into(),
                    known: known_profiles(paths),
                });
            }
            file::load(&path, keys)?
        }
    };
    Ok((file, profile))
}

/// `a, b` or `none`.
pub fn known_profiles(paths: &Paths) -> String {
    let names = paths.profile_names();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

impl Layers {
    /// Adds `key = value` in front of the command line.
    fn add(&mut self, key: &Key, value: &str, from: &str) -> Result<(), ConfigError> {
        let args = key.args(value).map_err(|reason| ConfigError::BadValue {
            at: from.to_string(),
            key: key.long.clone(),
            reason,
        })?;
        self.added.extend(args);
        Ok(())
    }

    /// The command line with the layers' values.
    pub fn argv(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = self.argv.iter().take(1).cloned().collect();
        out.extend(self.added.iter().cloned());
        out.extend(self.argv.iter().skip(1).cloned());
        out
    }

    fn parse(&mut self) -> Result<Cli, ResolveError> {
        let matches = Cli::command()
            .try_get_matches_from(self.argv())
            .map_err(ResolveError::Clap)?;
        self.values = self
            .keys
            .iter()
            .filter_map(|k| raw(&matches, &k.id).map(|v| (k.id.clone(), v)))
            .collect();
        // kt-connect's spellings folded into ktx's settings (`--podCreationTimeout`, `-d`, …).
        Cli::from_arg_matches(&matches)
            .map(Cli::resolved)
            .map_err(ResolveError::Clap)
    }

    /// Adds the namespace ConfigMap's `values` (read from `name`) under the file, and parses
    /// the command line again. Keys that connect to the cluster are not taken from it.
    pub fn with_namespace(&mut self, name: &str, values: &Values) -> Result<Cli, ResolveError> {
        for key in self.keys.clone().iter() {
            if CONNECTION_KEYS.contains(&key.id.as_str()) {
                continue;
            }
            let open = matches!(
                self.sources.get(&key.id),
                Some(Source::Default | Source::Unset)
            );
            if let (true, Some(e)) = (open, values.get(&key.id)) {
                let source = Source::Namespace(name.to_string());
                self.add(key, &e.value, &source.to_string())?;
                self.sources.insert(key.id.clone(), source);
            }
        }
        self.parse()
    }

    /// Each key (canonical spelling), its value (`-` when unset) and where it came from.
    pub fn rows(&self) -> Vec<(String, String, Source)> {
        self.keys
            .iter()
            .map(|k| {
                (
                    k.long.clone(),
                    self.values
                        .get(&k.id)
                        .cloned()
                        .unwrap_or_else(|| "-".into()),
                    self.sources.get(&k.id).cloned().unwrap_or(Source::Unset),
                )
            })
            .collect()
    }

    /// Where key `id`'s value came from.
    pub fn source(&self, id: &str) -> Option<&Source> {
        self.sources.get(id)
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }
}

/// A key's value as given (`true`/`false` for switches, the count for `-v`).
fn raw(m: &ArgMatches, id: &str) -> Option<String> {
    if let Ok(Some(vals)) = m.try_get_raw(id) {
        let v: Vec<String> = vals.map(|v| v.to_string_lossy().into_owned()).collect();
        if !v.is_empty() {
            return Some(v.join(","));
        }
    }
    if let Ok(Some(n)) = m.try_get_one::<u8>(id) {
        return Some(n.to_string());
    }
    if let Ok(Some(b)) = m.try_get_one::<bool>(id) {
        return Some(b.to_string());
    }
    None
}
