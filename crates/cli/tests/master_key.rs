//! `cistern secrets rotate-master-key` from the shell: the key file is replaced, the secrets stay
//! usable, and a key given in the environment is not rotated behind the operator's back.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cistern");

fn cistern(db: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--database", db])
        .env_remove("CISTERN_DATABASE_URL")
        .env_remove("CISTERN_MASTER_KEY")
        .envs(env.iter().copied())
        .output()
        .expect("run cistern");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn rotate_master_key_replaces_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let key_file = dir.path().join("cistern.key");
    let (ok, _, err) = cistern(&db, &["secrets", "set", "hook=v1", "other=v2"], &[]);
    assert!(ok, "{err}");
    let before = std::fs::read_to_string(&key_file).unwrap();

    let (ok, out, err) = cistern(&db, &["secrets", "rotate-master-key"], &[]);
    assert!(ok, "{err}");
    assert!(out.is_empty(), "nothing on stdout: {out}");
    assert!(err.contains("2 secrets re-encrypted"), "{err}");
    let after = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(before, after);
    assert!(!dir.path().join("cistern.key.old").exists());
    assert!(!dir.path().join("cistern.key.new").exists());
    // The secrets still serve: a source can name one.
    let (ok, _, err) = cistern(
        &db,
        &["sources", "create", "--kind", "github", "--secret", "hook"],
        &[],
    );
    assert!(ok, "{err}");
    // The old key is refused.
    let (ok, _, err) = cistern(
        &db,
        &["secrets", "list"],
        &[("CISTERN_MASTER_KEY", before.trim())],
    );
    assert!(!ok && err.contains("not the one"), "{err}");
    // A key from the environment is not rotated (it would have to be changed there too).
    let (ok, _, err) = cistern(
        &db,
        &["secrets", "rotate-master-key"],
        &[("CISTERN_MASTER_KEY", after.trim())],
    );
    assert!(!ok && err.contains("CISTERN_MASTER_KEY"), "{err}");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), after);
}
