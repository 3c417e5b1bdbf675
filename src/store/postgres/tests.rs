//! The PostgreSQL store against a real, private PostgreSQL cluster.

use super::cluster::Cluster;
use super::*;

async fn open(cluster: &Cluster) -> PostgresStore {
    let config = parse_url(&cluster.url("postdesk")).expect("url");
    PostgresStore::open(config, 4, 64).await.expect("open")
}

#[tokio::test]
async fn migrates_and_reopens() {
    let cluster = Cluster::start();
    let store = open(&cluster).await;
    assert_eq!(store.status().await.expect("status").tickets, 0);
    drop(store);
    let _again = open(&cluster).await;
    assert_eq!(
        cluster.psql("postdesk", "SELECT MAX(version) FROM postdesk_schema"),
        MIGRATIONS.len().to_string()
    );
}
