//! Root-only tests: a visible SKIP without root, a failure when CI requires them
//! (`KTX_REQUIRE_ROOT_TESTS=1`).

use std::process::Command;

/// True when the test may run; prints SKIP (or panics under KTX_REQUIRE_ROOT_TESTS=1) otherwise.
pub fn root_or_skip(test: &str) -> bool {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let has_tun = std::path::Path::new("/dev/net/tun").exists();
    if is_root && has_tun {
        return true;
    }
    let why = format!("SKIP {test}: needs root and /dev/net/tun (root: {is_root}, tun: {has_tun})");
    if std::env::var("KTX_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("{why}, and KTX_REQUIRE_ROOT_TESTS=1");
    }
    eprintln!("{why}");
    false
}

/// A network namespace for one test, removed on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("ktx-nst-{}-{tag}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// `ip netns exec NAME program args…`
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
