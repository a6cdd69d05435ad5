//! `ktx config`: show, get, set and unset keys of the config file, and named profiles
//! (`ktx config profile save|load|list|drop`, and kt-connect's `save-profile`, `load-profile`,
//! `list-profile`, `drop-profile`). A profile is a saved copy of the config file: `save`
//! copies the file into it, `load` copies it back over the file (as kt-connect does), and
//! `--profile NAME` (or `$KTX_PROFILE`) puts it over the file for one command.

use clap::{Args, Subcommand};
use serde::Serialize;

use super::file::{self, Values};
use super::keys::Keys;
use super::layers::{known_profiles, Layers};
use super::{namespace, ConfigError};
use crate::cli::{Global, Output};
use crate::cluster::api::Kube;
use crate::error::Result;

/// `--profile`, a global option of every command.
#[derive(Debug, Clone, Default, Args)]
pub struct ProfileArg {
    /// Use the defaults of saved profile NAME over those of the config file (`ktx config
    /// profile list`).
    #[arg(long, global = true, env = "KTX_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub action: ConfigAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ConfigAction {
    /// Every key, its value for this command line and where that comes from: flag >
    /// environment > profile > config file > the namespace's ConfigMap ktx-defaults >
    /// built-in default.
    Show {
        /// Do not read the namespace's ConfigMap ktx-defaults (no cluster access).
        #[arg(long)]
        local: bool,
    },
    /// Prints KEY's value in the config file (nothing when it is not set there).
    Get { key: String },
    /// Sets KEY to VALUE in the config file: `set routerImage REG/ktx-router:TAG` (or KEY=VALUE).
    Set { key: String, value: Option<String> },
    /// Removes KEY from the config file (back to the layers under it).
    Unset {
        #[arg(required_unless_present = "all")]
        key: Option<String>,
        /// Empties the config file (also the way out of a broken one).
        #[arg(long, short, conflicts_with = "key")]
        all: bool,
    },
    /// Named profiles: saved copies of the config file.
    #[command(subcommand)]
    Profile(ProfileAction),
    /// kt-connect's spelling of `profile save`.
    #[command(name = "save-profile")]
    SaveProfile { name: String },
    /// kt-connect's spelling of `profile load`.
    #[command(name = "load-profile")]
    LoadProfile {
        name: String,
        /// Print the profile instead of loading it.
        #[arg(long = "dryRun", alias = "dry-run")]
        dry_run: bool,
    },
    /// kt-connect's spelling of `profile list`.
    #[command(name = "list-profile")]
    ListProfile,
    /// kt-connect's spelling of `profile drop`.
    #[command(name = "drop-profile")]
    DropProfile { name: String },
}

#[derive(Debug, Clone, Subcommand)]
pub enum ProfileAction {
    /// Saves the config file as profile NAME (replacing one of that name).
    Save { name: String },
    /// Replaces the config file with profile NAME.
    Load {
        name: String,
        /// Print the profile instead of loading it.
        #[arg(long = "dryRun", alias = "dry-run")]
        dry_run: bool,
    },
    /// The saved profiles.
    List,
    /// Deletes profile NAME.
    Drop { name: String },
}

/// Runs `ktx config …`; results on stdout, what changed on stderr.
pub async fn run(layers: &Layers, args: &ConfigArgs, global: &Global) -> Result<()> {
    let keys = layers.keys();
    let paths = || layers.paths.clone().ok_or(ConfigError::NoConfigDir);
    let profile = match &args.action {
        ConfigAction::Profile(p) => p.clone(),
        ConfigAction::SaveProfile { name } => ProfileAction::Save { name: name.clone() },
        ConfigAction::LoadProfile { name, dry_run } => ProfileAction::Load {
            name: name.clone(),
            dry_run: *dry_run,
        },
        ConfigAction::ListProfile => ProfileAction::List,
        ConfigAction::DropProfile { name } => ProfileAction::Drop { name: name.clone() },
        ConfigAction::Show { local } => return show(layers, global, *local).await,
        ConfigAction::Get { key } => {
            let key = find(keys, key, "ktx config get")?;
            let values = file::load(&paths()?.file(), keys)?;
            if let Some(e) = values.get(&key.id) {
                println!("{}", e.value);
            }
            return Ok(());
        }
        ConfigAction::Set { key, value } => {
            let (key, value) = match value {
                Some(v) => (key.as_str(), v.as_str()),
                None => key.split_once('=').ok_or_else(|| ConfigError::BadValue {
                    at: "ktx config set".into(),
                    key: key.clone(),
                    reason: "no value: use `ktx config set KEY VALUE` or KEY=VALUE".into(),
                })?,
            };
            let key = find(keys, key, "ktx config set")?;
            key.check(value).map_err(|reason| ConfigError::BadValue {
                at: "ktx config set".into(),
                key: key.long.clone(),
                reason,
            })?;
            let path = paths()?.file();
            let mut values = file::load(&path, keys)?;
            values.0.insert(
                key.id.clone(),
                file::Entry {
                    value: value.to_string(),
                    line: 0,
                },
            );
            file::write(&path, &file::render(&values, keys))?;
            eprintln!("{} = {value} in {}", key.long, path.display());
            return Ok(());
        }
        ConfigAction::Unset { key, all } => {
            let path = paths()?.file();
            let mut values = Values::default();
            if !*all {
                let name = key.as_deref().unwrap_or_default();
                let key = find(keys, name, "ktx config unset")?;
                values = file::load(&path, keys)?;
                values.0.remove(&key.id);
            }
            file::write(&path, &file::render(&values, keys))?;
            return Ok(());
        }
    };
    let paths = paths()?;
    match profile {
        ProfileAction::Save { name } => {
            let to = paths.profile(&name)?;
            let values = file::load(&paths.file(), keys)?;
            file::write(&to, &file::render(&values, keys))?;
            eprintln!("saved {} as profile {name}", paths.file().display());
        }
        ProfileAction::Load { name, dry_run } => {
            let from = paths.profile(&name)?;
            if !from.exists() {
                return Err(no_profile(&paths, &name).into());
            }
            let text = file::render(&file::load(&from, keys)?, keys);
            if dry_run {
                print!("{text}");
            } else {
                file::write(&paths.file(), &text)?;
                eprintln!("loaded profile {name} into {}", paths.file().display());
            }
        }
        ProfileAction::List => {
            for name in paths.profile_names() {
                let active = layers.profile.as_deref() == Some(name.as_str());
                println!("{name}{}", if active { " (active)" } else { "" });
            }
        }
        ProfileAction::Drop { name } => {
            let path = paths.profile(&name)?;
            match std::fs::remove_file(&path) {
                Ok(()) => eprintln!("dropped profile {name}"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(no_profile(&paths, &name).into())
                }
                Err(source) => {
                    return Err(ConfigError::Write {
                        path: path.display().to_string(),
                        source,
                    }
                    .into())
                }
            }
        }
    }
    Ok(())
}

fn no_profile(paths: &file::Paths, name: &str) -> ConfigError {
    ConfigError::NoProfile {
        name: name.into(),
        known: known_profiles(paths),
    }
}

fn find<'k>(keys: &'k Keys, name: &str, at: &str) -> Result<&'k super::keys::Key, ConfigError> {
    keys.find(name).ok_or_else(|| ConfigError::UnknownKey {
        at: at.into(),
        key: name.into(),
        known: keys.list(),
    })
}

#[derive(Serialize)]
struct Row {
    key: String,
    value: String,
    from: String,
}

/// The table of `ktx config show`, the namespace's ConfigMap included unless `local`.
async fn show(layers: &Layers, global: &Global, local: bool) -> Result<()> {
    let mut layers = layers.clone();
    let mut notes = Vec::new();
    if let Some(problem) = &layers.problem {
        notes.push(format!("not used: {problem}"));
    }
    if !local {
        match read_namespace(&layers, global).await {
            Ok(Some((name, values, warnings))) => {
                notes.extend(warnings);
                if let Err(e) = layers.with_namespace(&name, &values) {
                    notes.push(format!("ConfigMap {name} not used: {e}"));
                }
            }
            Ok(None) => {}
            Err(reason) => notes.push(format!(
                "the namespace's ConfigMap {} was not read: {reason}",
                namespace::NAME
            )),
        }
    }
    let rows: Vec<Row> = layers
        .rows()
        .into_iter()
        .map(|(key, value, from)| Row {
            key,
            value,
            from: from.to_string(),
        })
        .collect();
    match global.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        ),
        Output::Text => {
            let kw = rows.iter().map(|r| r.key.len()).max().unwrap_or(3).max(3);
            let vw = rows.iter().map(|r| r.value.len()).max().unwrap_or(5).max(5);
            println!("{:kw$}  {:vw$}  FROM", "KEY", "VALUE");
            for r in &rows {
                println!("{:kw$}  {:vw$}  {}", r.key, r.value, r.from);
            }
        }
    }
    for n in notes {
        eprintln!("note: {n}");
    }
    Ok(())
}

/// The ConfigMap's name, values and warnings; `Ok(None)` when it is not there or not readable.
async fn read_namespace(
    layers: &Layers,
    global: &Global,
) -> std::result::Result<Option<(String, Values, Vec<String>)>, String> {
    let kube = Kube::connect(global).await.map_err(|e| e.to_string())?;
    let found = tokio::time::timeout(global.api_timeout, namespace::read(&kube, layers.keys()))
        .await
        .map_err(|_| "the API server did not answer in time".to_string())?;
    Ok(found.map(|(values, warnings)| {
        (
            format!("{}/{}", kube.namespace, namespace::NAME),
            values,
            warnings,
        )
    }))
}
