//! The SQLite database, its -wal and -shm files and backup copies are readable by their owner
//! only (0600): they hold API key hashes, the secrets' ciphertexts and every raw payload.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cistern_store::sqlite::SqliteStore;
use cistern_store::{Store, StoreSettings};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn with(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

async fn write_some(store: &SqliteStore, prefix: &str, n: usize) {
    for i in 0..n {
        store
            .create_tenant(&format!("{prefix}{i}"), false)
            .await
            .expect("write");
    }
}

#[tokio::test]
async fn database_wal_and_shm_are_created_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cistern.db");
    let store = SqliteStore::open(&path, &StoreSettings::default())
        .await
        .unwrap();
    write_some(&store, "a", 5).await;
    for suffix in ["", "-wal", "-shm"] {
        assert_eq!(mode(&with(&path, suffix)), 0o600, "cistern.db{suffix}");
    }
    // A backup copy holds the same data.
    let copy = dir.path().join("copy.db");
    cistern_store::sqlite::backup(&path, &copy).unwrap();
    assert_eq!(mode(&copy), 0o600, "the backup copy");
    drop(store);
}

#[tokio::test]
async fn files_left_readable_by_others_are_restricted_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    // As an older version left them: a database and its WAL, 0644.
    {
        let store = SqliteStore::open(&path, &StoreSettings::default())
            .await
            .unwrap();
        write_some(&store, "b", 2).await;
    }
    for suffix in ["", "-wal", "-shm"] {
        let p = with(&path, suffix);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let store = SqliteStore::open(&path, &StoreSettings::default())
        .await
        .unwrap();
    write_some(&store, "c", 1).await;
    for suffix in ["", "-wal", "-shm"] {
        assert_eq!(mode(&with(&path, suffix)), 0o600, "old.db{suffix}");
    }
    let ok = store.list_tenants().await.unwrap();
    assert!(ok.len() >= 3, "the data is still there");
}
