//! `creds`: one session's credentials as files, for the benchmark's separate processes.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use ktx_tunnel::credentials::SessionCredentials;

pub fn write(out: &Path) -> anyhow::Result<()> {
    let creds = SessionCredentials::generate("bench")?;
    write_dir(&out.join("shadow"), &creds.shadow_secret_data())?;
    write_dir(&out.join("ktx"), &creds.ktx_secret_data())?;
    Ok(())
}

fn write_dir(dir: &Path, data: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    for (name, bytes) in data {
        let path = dir.join(name);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("write {}", path.display()))?;
        f.write_all(bytes)?;
    }
    Ok(())
}
