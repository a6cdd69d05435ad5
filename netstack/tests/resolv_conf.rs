//! The managed resolv.conf with temp paths: install, restore, a crash and the next run, a file
//! changed by someone else, and in-place writes (the file may be a bind mount).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use ktx_netstack::resolv_conf::{install, restore, ResolvPaths, Restored, MARKER};

const ORIGINAL: &str = "# from dhcp\nnameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example\noptions ndots:2 timeout:1\n";

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup(tag: &str) -> (Dir, ResolvPaths) {
    let dir = std::env::temp_dir().join(format!("ktx-resolv-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/resolv.conf"), ORIGINAL).unwrap();
    let paths = ResolvPaths {
        resolv_conf: dir.join("etc/resolv.conf"),
        backup: dir.join("var/lib/ktx/resolv.conf.backup"),
    };
    (Dir(dir), paths)
}

fn search() -> Vec<String> {
    [
        "shop.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
    ]
    .map(String::from)
    .to_vec()
}

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn install_writes_in_place_and_restore_puts_the_original_back() {
    let (_dir, paths) = setup("roundtrip");
    let inode = std::fs::metadata(&paths.resolv_conf).unwrap().ino();
    let installed = install(&paths, "127.0.0.153".parse().unwrap(), &search()).unwrap();
    assert_eq!(installed.recovered, Restored::NothingToRestore);
    assert_eq!(
        installed.original.nameservers,
        vec![
            "192.0.2.53".parse::<std::net::IpAddr>().unwrap(),
            "192.0.2.54".parse().unwrap()
        ]
    );
    let managed = read(&paths.resolv_conf);
    assert!(managed.starts_with(MARKER), "{managed}");
    let lines: Vec<&str> = managed.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "nameserver 127.0.0.153",
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example",
            "options ndots:2 timeout:1",
        ]
    );
    assert_eq!(read(&paths.backup), ORIGINAL);
    assert_eq!(
        std::fs::metadata(&paths.resolv_conf).unwrap().ino(),
        inode,
        "written in place"
    );

    assert_eq!(installed.held.restore().unwrap(), Restored::Restored);
    assert_eq!(read(&paths.resolv_conf), ORIGINAL);
    assert_eq!(
        std::fs::metadata(&paths.resolv_conf).unwrap().ino(),
        inode,
        "restored in place"
    );
    assert!(!paths.backup.exists(), "state removed");
    assert_eq!(
        restore(&paths).unwrap(),
        Restored::NothingToRestore,
        "idempotent"
    );
}

#[test]
fn after_a_crash_the_next_install_restores_first_and_clean_restores() {
    let (_dir, paths) = setup("crash");
    install(&paths, "127.0.0.153".parse().unwrap(), &search()).unwrap();
    // the process dies here: no restore. The next `ktx connect`:
    let again = install(&paths, "127.0.0.153".parse().unwrap(), &search()).unwrap();
    assert_eq!(again.recovered, Restored::Restored);
    assert_eq!(
        again.original.nameservers.len(),
        2,
        "the original, not our own file"
    );
    assert_eq!(
        read(&paths.backup),
        ORIGINAL,
        "the backup is the original, not ours"
    );
    // it dies again (its lock goes with it); `ktx clean`:
    drop(again);
    assert_eq!(restore(&paths).unwrap(), Restored::Restored);
    assert_eq!(read(&paths.resolv_conf), ORIGINAL);
}

#[test]
fn a_file_changed_since_is_never_clobbered() {
    let (_dir, paths) = setup("changed");
    install(&paths, "127.0.0.153".parse().unwrap(), &search()).unwrap();
    let theirs = "nameserver 198.51.100.1\n";
    std::fs::write(&paths.resolv_conf, theirs).unwrap();
    let Restored::ChangedSince { kept_backup } = restore(&paths).unwrap() else {
        panic!("a changed file is reported");
    };
    assert_eq!(read(&paths.resolv_conf), theirs, "left as it is");
    assert_eq!(
        read(&kept_backup),
        ORIGINAL,
        "the original is kept for a human"
    );
    assert_eq!(restore(&paths).unwrap(), Restored::NothingToRestore);
}

#[test]
fn a_crash_between_backup_and_write_restores_nothing_wrongly() {
    let (_dir, paths) = setup("half");
    std::fs::create_dir_all(paths.backup.parent().unwrap()).unwrap();
    std::fs::write(&paths.backup, ORIGINAL).unwrap();
    assert_eq!(restore(&paths).unwrap(), Restored::Restored);
    assert_eq!(read(&paths.resolv_conf), ORIGINAL);
    assert!(!paths.backup.exists());
}

/// `ktx clean`, or a second `ktx connect`, while a session runs: the file is exactly what ktx
/// wrote, as after a crash, and was put back under the running session, whose cluster names
/// then stopped resolving without a word. Now the session holds a lock on its state for as
/// long as it manages the file: restore leaves a live session's file alone, a second install
/// is refused, and the lock goes with the process (a crash leaves it free). Found by a review
/// helper, 2026-12-07.
#[test]
fn a_live_sessions_file_is_left_alone_and_a_second_install_refused() {
    let (_dir, paths) = setup("live");
    let installed = install(&paths, "127.0.0.153".parse().unwrap(), &search()).unwrap();
    let managed = read(&paths.resolv_conf);
    assert_eq!(restore(&paths).unwrap(), Restored::InUse);
    assert_eq!(read(&paths.resolv_conf), managed);
    let e = install(&paths, "127.0.0.154".parse().unwrap(), &search()).unwrap_err();
    assert!(e.to_string().contains("a running `ktx connect`"), "{e}");
    assert_eq!(read(&paths.resolv_conf), managed);
    // The session itself restores.
    assert_eq!(installed.held.restore().unwrap(), Restored::Restored);
    assert_eq!(read(&paths.resolv_conf), ORIGINAL);
}

/// A session that died (its lock released with its process) is restored by the next one.
#[test]
fn a_dead_sessions_lock_does_not_stop_the_restore() {
    let (_dir, paths) = setup("dead");
    let installed = install(&paths, "127.0.0.153".parse().unwrap(), &search()).unwrap();
    drop(installed);
    assert_eq!(restore(&paths).unwrap(), Restored::Restored);
    assert_eq!(read(&paths.resolv_conf), ORIGINAL);
}
