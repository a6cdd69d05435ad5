//! The config file and profiles on disk: `$XDG_CONFIG_HOME/ktx/config.yaml` (else
//! `~/.config/ktx/config.yaml`) and `…/ktx/profiles/NAME.yaml`, both a YAML map of key → value
//! (kt-connect's `GROUP: {name: value}` maps are read too). Reading checks every key and value,
//! and says which file and line is wrong; writing is atomic (a temporary file renamed over
//! the old one) and private (0600, in a 0700 directory).
//!
//! Not here: which layer wins ([`super::layers`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::keys::Keys;
use super::ConfigError;

/// Where ktx keeps its files.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `…/ktx`.
    pub dir: PathBuf,
}

impl Paths {
    /// `$XDG_CONFIG_HOME/ktx`, else `$HOME/.config/ktx`; `None` without either.
    pub fn from_env() -> Option<Paths> {
        let xdg = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute());
        let base = xdg.or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".config"))
        })?;
        Some(Paths {
            dir: base.join("ktx"),
        })
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    pub fn profiles(&self) -> PathBuf {
        self.dir.join("profiles")
    }

    /// The file of profile `name`, once the name is checked.
    pub fn profile(&self, name: &str) -> Result<PathBuf, ConfigError> {
        let ok = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(ConfigError::BadProfileName { name: name.into() });
        }
        Ok(self.profiles().join(format!("{name}.yaml")))
    }

    /// Names of the saved profiles, sorted.
    pub fn profile_names(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.profiles()) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".yaml"))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        names
    }
}

/// One value and the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: String,
    pub line: usize,
}

/// The keys set in one file, by clap id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values(pub BTreeMap<String, Entry>);

impl Values {
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.0.get(id)
    }
}

/// Reads `path`; a missing file is an empty one.
pub fn load(path: &Path, keys: &Keys) -> Result<Values, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &path.display().to_string(), keys),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Values::default()),
        Err(source) => Err(ConfigError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Parses a config file's text; `name` names it in errors.
pub fn parse(text: &str, name: &str, keys: &Keys) -> Result<Values, ConfigError> {
    let at = |line: usize| format!("{name} line {line}");
    let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
        at: at(e.location().map(|l| l.line()).unwrap_or(1)),
        reason: e.to_string(),
    })?;
    let map = match doc {
        serde_yaml::Value::Null => return Ok(Values::default()),
        serde_yaml::Value::Mapping(m) => m,
        _ => {
            return Err(ConfigError::Syntax {
                at: at(1),
                reason: "expected a map of key: value".into(),
            })
        }
    };
    let mut out = Values::default();
    let mut entries: Vec<(String, serde_yaml::Value)> = Vec::new();
    for (k, v) in map {
        let k = scalar(&k).ok_or_else(|| ConfigError::Syntax {
            at: at(1),
            reason: "a key is not a plain name".into(),
        })?;
        match v {
            // kt-connect's `global: {image: …}`.
            serde_yaml::Value::Mapping(group) => {
                for (gk, gv) in group {
                    let gk = scalar(&gk).unwrap_or_default();
                    entries.push((format!("{k}.{gk}"), gv));
                }
            }
            v => entries.push((k, v)),
        }
    }
    for (k, v) in entries {
        let short = k.rsplit('.').next().unwrap_or(&k);
        let line = line_of(text, short);
        let key = keys.find(&k).ok_or_else(|| ConfigError::UnknownKey {
            at: at(line),
            key: k.clone(),
            known: keys.list(),
        })?;
        let value = match &v {
            serde_yaml::Value::Null => continue,
            serde_yaml::Value::Sequence(items) => items
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()
                .map(|v| v.join(",")),
            v => scalar(v),
        }
        .ok_or_else(|| ConfigError::BadValue {
            at: at(line),
            key: key.long.clone(),
            reason: "expected a single value (text, number, true/false) or a list of them".into(),
        })?;
        key.check(&value).map_err(|reason| ConfigError::BadValue {
            at: at(line),
            key: key.long.clone(),
            reason,
        })?;
        out.0.insert(key.id.clone(), Entry { value, line });
    }
    Ok(out)
}

fn scalar(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The line (1-based) where `key:` is written, or 1.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start().trim_start_matches(['"', '\'']);
            l.strip_prefix(key)
                .map(|rest| {
                    rest.trim_start_matches(['"', '\''])
                        .trim_start()
                        .starts_with(':')
                })
                .unwrap_or(false)
        })
        .map(|i| i + 1)
        .unwrap_or(1)
}

/// The file's text for `values` (canonical spellings, sorted).
pub fn render(values: &Values, keys: &Keys) -> String {
    let mut out = String::from(
        "# ktx defaults, written by `ktx config`. Keys are ktx's global flags (`ktx config show`).\n",
    );
    for key in keys.iter() {
        if let Some(e) = values.get(&key.id) {
            let v = serde_yaml::to_string(&e.value).unwrap_or_else(|_| format!("{:?}\n", e.value));
            out.push_str(&format!("{}: {v}", key.long));
        }
    }
    out
}

/// Writes `text` to `path` atomically: a private temporary file beside it, renamed over it.
pub fn write(path: &Path, text: &str) -> Result<(), ConfigError> {
    let err = |source| ConfigError::Write {
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("config");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}
