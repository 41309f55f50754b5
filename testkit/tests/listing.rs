//! Listing keys end to end on real clusters: 20,000 keys with a prefix (among others without
//! it, some deleted, some binary) over pages of 333 through both frontends in turn, with a
//! storage node killed (SIGKILL) between two pages; bad input; `velourfog keys`.

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{Method, StatusCode};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use testkit::{Cluster, ClusterConfig};

/// After which page of the big listing a storage node is killed.
const KILL_AFTER_PAGE: usize = 20;

/// Listing calls each storage node (by id) answered for frontend `f`, from its metrics.
async fn answered(cluster: &Cluster, f: usize) -> BTreeMap<String, u64> {
    list_calls(cluster, f)
        .await
        .into_iter()
        .filter(|(_, outcome, _)| outcome == "answered")
        .map(|(node, _, n)| (node, n))
        .collect()
}

/// Listing calls to `node` that frontend `f` made in vain, from its metrics.
async fn answered_or_not(cluster: &Cluster, f: usize, node: &str) -> u64 {
    let calls = list_calls(cluster, f).await.into_iter();
    calls.filter(|(n, outcome, _)| n == node && outcome != "answered").map(|(_, _, n)| n).sum()
}

/// Every `(node, outcome, count)` of frontend `f`'s listing calls to storage nodes.
async fn list_calls(cluster: &Cluster, f: usize) -> Vec<(String, String, u64)> {
    let (status, body) = cluster
        .client
        .call(Method::GET, cluster.frontend(f), "/metrics", Bytes::new())
        .await
        .expect("metrics");
    assert_eq!(status, StatusCode::OK);
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        Some(line[start..start + line[start..].find('"')?].to_owned())
    };
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|line| {
            line.starts_with("velourfog_frontend_replica_calls_total{") && line.contains("op=\"list\"")
        })
        .map(|line| {
            let count = line.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("a count");
            (label(line, "node").expect("node"), label(line, "outcome").expect("outcome"), count)
        })
        .collect()
}

/// `GET /kv/?{query}` through frontend `f`: the status and the body.
async fn list(cluster: &Cluster, f: usize, query: &str) -> (StatusCode, Bytes) {
    let path = format!("/kv/?{query}");
    cluster.client.call(Method::GET, cluster.frontend(f), &path, Bytes::new()).await.expect("list")
}

/// A 200 page's keys (as bytes) and cursor; every key must be percent-encoded.
fn decode_page(body: &[u8]) -> (Vec<Vec<u8>>, Option<String>) {
    let page: serde_json::Value = serde_json::from_slice(body).expect("a JSON page");
    let object = page.as_object().expect("an object");
    assert_eq!(object.len(), 2, "keys and next only: {page}");
    let keys = object["keys"].as_array().expect("keys").iter().map(|key| {
        let escaped = key.as_str().expect("a string");
        assert!(escaped.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)), "{escaped}");
        common::query::decode(escaped.as_bytes()).expect("percent-encoded").into_owned()
    });
    (keys.collect(), object["next"].as_str().map(str::to_owned))
}

/// Runs `op` on every item of `items`, 64 at a time, through the client library.
async fn each<T, F>(items: Vec<T>, op: impl Fn(T) -> F)
where
    F: std::future::Future<Output = Result<(), client::Error>>,
{
    futures_util::stream::iter(items.into_iter().map(op))
        .buffer_unordered(64)
        .try_collect::<()>()
        .await
        .unwrap();
}

/// The `i`th key with the listing's prefix: mostly text, every tenth one with bytes that need
/// escaping (NUL, 0xFF, `/`, `%`, `&`, a newline).
fn listed_key(i: usize) -> Vec<u8> {
    if i.is_multiple_of(10) {
        [&b"list/"[..], b"\x00\xff/%&\n", i.to_string().as_bytes()].concat()
    } else {
        format!("list/{i:05}/item").into_bytes()
    }
}

#[tokio::test]
async fn twenty_thousand_keys_are_listed_once_each_with_a_node_killed_between_pages() {
    let mut cluster = Cluster::start(ClusterConfig::default()).await;
    let client = client::Client::new([cluster.frontend(0), cluster.frontend(1)]).unwrap();
    let keys: Vec<Vec<u8>> = (0..20_000).map(listed_key).collect();
    let others: Vec<Vec<u8>> = (0..2_000)
        .flat_map(|i| [format!("other/{i}").into_bytes(), format!("lis/{i}").into_bytes()])
        .collect();
    let started = Instant::now();
    each(keys.iter().chain(&others).cloned().collect(), |key| client.set(key, "v")).await;
    let deleted: Vec<Vec<u8>> = keys.iter().step_by(13).cloned().collect();
    each(deleted.clone(), |key| client.delete(key)).await;
    eprintln!(
        "wrote {} keys and deleted {} in {:?}",
        keys.len() + others.len(),
        deleted.len(),
        started.elapsed()
    );
    let deleted: BTreeSet<Vec<u8>> = deleted.into_iter().collect();
    let expected: BTreeSet<Vec<u8>> = keys.iter().filter(|k| !deleted.contains(*k)).cloned().collect();

    let started = Instant::now();
    let (mut listed, mut pages, mut cursor, mut killed) = (Vec::new(), 0, None::<String>, None);
    loop {
        let f = pages % 2;
        let before = if pages + 1 == KILL_AFTER_PAGE { Some(answered(&cluster, f).await) } else { None };
        let after = cursor.as_ref().map_or(String::new(), |c| format!("&after={c}"));
        let (status, body) = list(&cluster, f, &format!("prefix=list%2F&limit=333{after}")).await;
        assert_eq!(status, StatusCode::OK, "page {pages}: {}", String::from_utf8_lossy(&body));
        let (keys, next) = decode_page(&body);
        assert!(keys.len() <= 333, "page {pages} holds {} keys", keys.len());
        listed.extend(keys);
        pages += 1;
        if let Some(before) = before {
            // SIGKILL, between two pages, a node that answered the last one: the next page
            // goes on from a position that node named.
            let node =
                answered(&cluster, f).await.into_iter().find(|(node, calls)| before.get(node) != Some(calls));
            let node = node.expect("a storage node answered the page").0;
            let status = cluster.status().await;
            let members = status["storage"].as_array().expect("storage members");
            let member = members
                .iter()
                .find(|m| m["node_id"] == node.parse::<u64>().expect("an id"))
                .expect("a member");
            let addr = member["addr"].as_str().expect("an address");
            let s = cluster.storage.iter().position(|p| p.addr == addr).expect("a storage process");
            cluster.storage[s].kill();
            killed = Some(node);
        }
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let elapsed = started.elapsed();
    let killed = killed.expect("a node was killed before the last page");
    let failed: u64 =
        [answered_or_not(&cluster, 0, &killed).await, answered_or_not(&cluster, 1, &killed).await]
            .iter()
            .sum();
    eprintln!(
        "listed {} keys in {pages} pages of at most 333 in {elapsed:?}; node {killed} killed after page \
         {KILL_AFTER_PAGE}, then asked {failed} times in vain",
        listed.len()
    );
    let unique: BTreeSet<Vec<u8>> = listed.iter().cloned().collect();
    assert_eq!(unique.len(), listed.len(), "a key listed twice");
    let missing: Vec<String> =
        expected.difference(&unique).take(5).map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    let extra: Vec<String> =
        unique.difference(&expected).take(5).map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, not expected {extra:?}");

    // The whole listing again through the client library, with the node still dead.
    let started = Instant::now();
    let again: Vec<Bytes> = client.keys("list/", Some(5_000)).try_collect().await.unwrap();
    eprintln!("listed {} keys again through the client library in {:?}", again.len(), started.elapsed());
    let again: BTreeSet<Vec<u8>> = again.iter().map(|k| k.to_vec()).collect();
    assert_eq!(again, expected);
    let started = Instant::now();
    let pages: Vec<client::KeyPage> = client.pages("none/", None).try_collect().await.unwrap();
    assert!(pages.iter().all(|page| page.keys.is_empty()));
    eprintln!(
        "a prefix no key has: {} page(s), every record examined, in {:?}",
        pages.len(),
        started.elapsed()
    );
}

#[tokio::test]
async fn bad_listings_are_refused_with_a_reason() {
    let cluster =
        Cluster::start(ClusterConfig { storage: 1, replication: 1, frontends: 1, ..Default::default() })
            .await;
    for i in 0..30 {
        assert_eq!(cluster.set(0, format!("a/{i}").as_bytes(), "v").await.0, StatusCode::OK);
    }
    let (status, body) = list(&cluster, 0, "prefix=a%2F&limit=2").await;
    assert_eq!(status, StatusCode::OK);
    let cursor = decode_page(&body).1.expect("more than one page");
    let mut damaged = cursor.clone().into_bytes();
    let last = damaged.len() - 1;
    damaged[last] = if damaged[last] == b'0' { b'1' } else { b'0' };
    let damaged = String::from_utf8(damaged).unwrap();
    let cases = [
        ("limit=0".to_owned(), "`limit` must be 1 to 10000 (got 0)"),
        ("limit=10001".to_owned(), "`limit` must be 1 to 10000 (got 10001)"),
        ("limit=ten".to_owned(), "parameter `limit` must be a number"),
        ("limit=1&limit=2".to_owned(), "parameter `limit` is given more than once"),
        ("after=not-a-cursor".to_owned(), "malformed cursor in `after`"),
        ("after=".to_owned(), "malformed cursor in `after`"),
        (format!("prefix=a%2F&after={damaged}"), "does not belong to this listing"),
        (format!("prefix=b%2F&after={cursor}"), "does not belong to this listing"),
        (
            "prefix=a%2F&cursor=x".to_owned(),
            "unknown parameter `cursor` (this endpoint takes: prefix, limit, after)",
        ),
        ("prefix=%zz".to_owned(), "malformed percent-escape"),
    ];
    for (query, reason) in cases {
        let (status, body) = list(&cluster, 0, &query).await;
        let message = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {message}");
        assert!(message.contains(reason), "{query}: {message}");
    }
    let (status, body) =
        cluster.client.call(Method::POST, cluster.frontend(0), "/kv/", Bytes::new()).await.unwrap();
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body:?}");
    let (status, body) = list(&cluster, 0, &format!("prefix=a%2F&limit=100&after={cursor}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(decode_page(&body).0.len(), 28, "the rest of the listing after the first page");
    let (status, _) =
        cluster.client.call(Method::GET, cluster.frontend(0), "/kv", Bytes::new()).await.unwrap();
    assert_eq!(status, StatusCode::OK, "without the slash");

    // The storage endpoint is internal: the cluster secret or 401.
    let request = common::proto::ListKeys {
        digits: 1,
        partition: 0,
        prefix: String::new(),
        from: None,
        limit: 10,
        max_bytes: 1000,
        max_scan: 1000,
    };
    let body = Bytes::from(serde_json::to_vec(&request).unwrap());
    let storage = &cluster.storage[0].addr;
    let stranger = testkit::TestClient::new();
    let (status, _) =
        stranger.call(Method::POST, storage, common::proto::KEYS_PATH, body.clone()).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, answer) =
        cluster.client.call(Method::POST, storage, common::proto::KEYS_PATH, body).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{answer:?}");
    let bad = Bytes::from_static(br#"{"digits":1,"partition":0,"limit":0,"max_bytes":1,"max_scan":1}"#);
    let (status, answer) =
        cluster.client.call(Method::POST, storage, common::proto::KEYS_PATH, bad).await.unwrap();
    assert_eq!(
        (status, String::from_utf8_lossy(&answer).trim()),
        (StatusCode::BAD_REQUEST, "`limit` must be 1 to 10000")
    );
}

/// Runs `velourfog --frontends <frontends> keys <args>`: exit code, standard output, standard error.
async fn velourfog_keys(frontends: &str, args: &[&str]) -> (Option<i32>, Vec<u8>, String) {
    let output = tokio::process::Command::new(testkit::binary("velourfog"))
        .args(["--frontends", frontends, "keys"])
        .args(args)
        .output()
        .await
        .expect("run velourfog");
    (output.status.code(), output.stdout, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn velourfog_keys_prints_every_key_with_the_prefix_in_each_format() {
    let cluster = Cluster::start(ClusterConfig::default()).await;
    let frontends = format!("{},{}", cluster.frontend(0), cluster.frontend(1));
    let mut keys: Vec<Vec<u8>> = (0..40).map(|i| format!("cli/{i}").into_bytes()).collect();
    keys.push(b"cli/\xff\x00 &=%".to_vec());
    keys.push("cli/café".as_bytes().to_vec());
    for key in keys.iter().chain([&b"other"[..].to_vec(), &b"cl"[..].to_vec()]) {
        assert_eq!(cluster.set(0, key, "v").await.0, StatusCode::OK);
    }
    assert_eq!(cluster.delete(1, b"cli/7").await.0, StatusCode::OK);
    keys.retain(|k| k != b"cli/7");
    let expected: BTreeSet<Vec<u8>> = keys.iter().cloned().collect();

    let (code, stdout, stderr) = velourfog_keys(&frontends, &["cli/", "--escaped", "--page-size", "7"]).await;
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    let escaped: Vec<Vec<u8>> = String::from_utf8(stdout)
        .unwrap()
        .lines()
        .map(|line| common::query::decode(line.as_bytes()).unwrap().into_owned())
        .collect();
    assert_eq!(escaped.len(), expected.len(), "one line per key");
    assert_eq!(escaped.into_iter().collect::<BTreeSet<_>>(), expected);

    // Raw bytes, one line each (none of these keys holds a newline).
    let (code, stdout, _) = velourfog_keys(&frontends, &["cli/"]).await;
    assert_eq!(code, Some(0));
    let raw: BTreeSet<Vec<u8>> =
        stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
    assert_eq!(raw, expected);

    let (code, stdout, _) = velourfog_keys(&frontends, &["--json", "--hex-prefix", "636c692fff"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(String::from_utf8(stdout).unwrap(), "{\"key_hex\":\"636c692fff0020263d25\"}\n");

    let (code, stdout, _) = velourfog_keys(&frontends, &[]).await;
    assert_eq!(
        (code, stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count()),
        (Some(0), expected.len() + 2)
    );

    let (code, stdout, stderr) = velourfog_keys(&frontends, &["--json", "--escaped"]).await;
    assert_eq!((code, stdout.len()), (Some(1), 0));
    assert!(stderr.contains("choose one"), "{stderr}");
}
