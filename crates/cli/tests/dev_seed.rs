//! `cistern dev seed`: the fixture history (runs, satellites, sources, subscriptions) lands in the
//! database through the store, and seeding again with the same seed updates the same runs
//! instead of doubling them.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cistern");

fn cistern(db: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--database", db])
        .env_remove("CISTERN_DATABASE_URL")
        .output()
        .expect("run cistern");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn dev_seed_writes_a_history_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("seed.db").display());
    let (ok, _, err) = cistern(&db, &["dev", "seed", "--runs", "300", "--days", "21"]);
    assert!(ok, "{err}");
    assert!(err.contains("seeded 300 runs"), "{err}");
    assert!(err.contains("8 pipelines on 2 instances"), "{err}");

    let store = cistern_store::open(&db, &Default::default()).await.unwrap();
    let tenant = store.tenant_by_slug("default").await.unwrap().unwrap();
    let pipelines = store.list_pipelines(&tenant.id).await.unwrap();
    assert_eq!(pipelines.len(), 8);
    let total: i64 = pipelines.iter().map(|p| p.runs).sum();
    assert_eq!(total, 300);
    let instances = store.list_instances(&tenant.id).await.unwrap();
    assert!(instances
        .iter()
        .all(|i| i.last_heartbeat_at.is_some() && i.details.is_some()));
    // The admin side: satellites, signed sources, subscriptions with their deliveries, all
    // usable by a hub on this database (the secrets are encrypted with its key file).
    assert!(
        err.contains("3 satellites, 3 signed sources, 3 subscriptions"),
        "{err}"
    );
    assert_eq!(store.list_satellites(&tenant.id).await.unwrap().len(), 3);
    assert_eq!(store.list_sources(&tenant.id).await.unwrap().len(), 3);
    let subs = store.list_subscriptions(&tenant.id).await.unwrap();
    assert_eq!(subs.len(), 3);
    assert!(dir.path().join("cistern.key").exists());
    drop(store);

    // The same seed on the same day makes the same runs: they are updated, not added.
    let (ok, _, err) = cistern(&db, &["dev", "seed", "--runs", "300", "--days", "21"]);
    assert!(ok, "{err}");
    let store = cistern_store::open(&db, &Default::default()).await.unwrap();
    let total: i64 = store
        .list_pipelines(&tenant.id)
        .await
        .unwrap()
        .iter()
        .map(|p| p.runs)
        .sum();
    assert_eq!(total, 300);

    let (ok, _, err) = cistern(&db, &["dev", "seed", "--days", "0"]);
    assert!(!ok);
    assert!(err.contains("--days must be at least 1"), "{err}");
}
