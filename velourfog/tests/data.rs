//! The data commands of the real binary against an in-memory fake frontend: bytes in and out
//! exactly (argument, standard input from a file and from a pipe, --file), exit codes and the
//! one-line messages on standard error.

use bytes::Bytes;
use http::StatusCode;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

type Store = Arc<Mutex<HashMap<Vec<u8>, Bytes>>>;

/// A frontend serving `/get/`, `/set/` (POST body) and `/delete/` from `store`.
async fn fake_frontend(store: Store) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (trigger, shutdown) = common::shutdown::channel();
    std::mem::forget(trigger); // serve until the test's runtime ends
    let handler = move |req: http::Request<hyper::body::Incoming>| {
        let store = store.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = common::http::read_body(body, 256 << 20).await.unwrap();
            let query = common::query::Query::parse(parts.uri.query().unwrap_or("")).unwrap();
            let key = query.get("key").unwrap().to_vec();
            let mut store = store.lock().unwrap();
            match parts.uri.path() {
                "/get/" => match store.get(&key) {
                    Some(value) => http::Response::new(common::http::full(value.clone())),
                    None => common::http::text(StatusCode::NOT_FOUND, "key not found"),
                },
                "/set/" => {
                    store.insert(key, body);
                    common::http::text(StatusCode::OK, "ok")
                }
                _ => {
                    store.remove(&key);
                    common::http::text(StatusCode::OK, "ok")
                }
            }
        }
    };
    tokio::spawn(common::http::serve(listener, handler, shutdown));
    addr
}

/// Runs the binary with `args` (through `frontends`) and `stdin`.
async fn velourfog(frontends: &str, args: &[&OsStr], stdin: Stdio) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_velourfog"))
        .arg("--frontends")
        .arg(frontends)
        .args(args)
        .stdin(stdin)
        .output()
        .await
        .unwrap()
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// `(exit code, stdout, stderr)`.
fn outcome(output: Output) -> (Option<i32>, Vec<u8>, String) {
    (output.status.code(), output.stdout, String::from_utf8(output.stderr).unwrap())
}

/// A value of `len` bytes of every value.
fn value(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

#[tokio::test]
async fn values_go_in_and_come_out_byte_exact_from_every_source() {
    let store = Store::default();
    let fe = fake_frontend(store.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("value");
    let big = value(5 << 20);
    std::fs::write(&file, &big).unwrap();

    // An argument: as given, no newline.
    let set = velourfog(&fe, &[os("set"), os("greeting"), os("hello")], Stdio::null()).await;
    assert_eq!(outcome(set), (Some(0), b"ok\n".to_vec(), String::new()));
    let get = velourfog(&fe, &[os("get"), os("greeting")], Stdio::null()).await;
    assert_eq!(outcome(get), (Some(0), b"hello".to_vec(), String::new()));

    // Standard input redirected from a file (streamed with its length), and --file.
    let stdin = Stdio::from(std::fs::File::open(&file).unwrap());
    assert_eq!(velourfog(&fe, &[os("set"), os("redirected"), os("-")], stdin).await.status.code(), Some(0));
    let path = file.as_os_str();
    let set = velourfog(&fe, &[os("set"), os("named"), os("--file"), path], Stdio::null()).await;
    assert_eq!(set.status.code(), Some(0));

    // Standard input from a pipe (read whole, then sent).
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_velourfog"))
        .args(["--frontends", &fe, "set", "piped", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(&big).await.unwrap();
    drop(pipe);
    assert!(child.wait_with_output().await.unwrap().status.success());

    for key in ["redirected", "named", "piped"] {
        assert_eq!(store.lock().unwrap()[key.as_bytes()], big, "{key}");
        let get = velourfog(&fe, &[os("get"), os(key)], Stdio::null()).await;
        let (code, stdout, stderr) = outcome(get);
        assert_eq!((code, stderr.as_str()), (Some(0), ""), "{key}");
        assert!(stdout == big, "{key}: {} bytes came back", stdout.len());
    }
}

#[tokio::test]
async fn keys_are_any_bytes_from_the_command_line_or_hex() {
    let store = Store::default();
    let fe = fake_frontend(store.clone()).await;
    let raw = OsStr::from_bytes(b"\xff\xfe a&b=c?%");
    assert_eq!(velourfog(&fe, &[os("set"), raw, os("v1")], Stdio::null()).await.status.code(), Some(0));
    let hex = [os("--hex-key"), os("00ff0a")];
    assert_eq!(
        velourfog(&fe, &[&[os("set")], &hex[..], &[os("v2")]].concat(), Stdio::null()).await.status.code(),
        Some(0)
    );
    let stored: HashMap<Vec<u8>, Bytes> = store.lock().unwrap().clone();
    assert_eq!(stored[&b"\xff\xfe a&b=c?%"[..]], "v1");
    assert_eq!(stored[&b"\x00\xff\n"[..]], "v2");
    let get = velourfog(&fe, &[os("get"), os("--hex-key"), os("00FF0A")], Stdio::null()).await;
    assert_eq!(outcome(get).1, b"v2");
    let delete = velourfog(&fe, &[os("delete"), raw], Stdio::null()).await;
    assert_eq!(outcome(delete), (Some(0), b"ok\n".to_vec(), String::new()));
    assert!(!store.lock().unwrap().contains_key(&b"\xff\xfe a&b=c?%"[..]));
}

#[tokio::test]
async fn a_missing_key_and_a_dead_cluster_exit_1_with_one_line() {
    let fe = fake_frontend(Store::default()).await;
    let get = velourfog(&fe, &[os("get"), os("nothing")], Stdio::null()).await;
    assert_eq!(outcome(get), (Some(1), Vec::new(), "key not found\n".to_owned()));

    let get = velourfog(&fe, &[os("--json"), os("get"), os("nothing")], Stdio::null()).await;
    let (code, stdout, stderr) = outcome(get);
    assert_eq!((code, stderr.as_str()), (Some(1), "key not found\n"));
    assert_eq!(String::from_utf8(stdout).unwrap(), "{\"found\":false,\"key\":\"nothing\"}\n");

    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
    let set =
        velourfog(&dead, &[os("set"), os("k"), os("v"), os("--timeout"), os("5s")], Stdio::null()).await;
    let (code, stdout, stderr) = outcome(set);
    assert_eq!((code, stdout.len()), (Some(1), 0));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(&format!("http://{dead}: cannot connect: ")), "{stderr}");

    // With a live frontend after the dead one, nothing shows.
    let both = format!("{dead},{fe}");
    let set = velourfog(&both, &[os("--json"), os("set"), os("k"), os("v")], Stdio::null()).await;
    assert_eq!(outcome(set), (Some(0), b"{\"ok\":true}\n".to_vec(), String::new()));
    let get = velourfog(&both, &[os("--json"), os("get"), os("k")], Stdio::null()).await;
    assert_eq!(
        String::from_utf8(outcome(get).1).unwrap(),
        "{\"found\":true,\"key\":\"k\",\"value\":\"v\"}\n"
    );
}

#[tokio::test]
async fn an_unreadable_file_is_named() {
    let fe = fake_frontend(Store::default()).await;
    let set =
        velourfog(&fe, &[os("set"), os("k"), os("--file"), os("/nonexistent/value")], Stdio::null()).await;
    let (code, _, stderr) = outcome(set);
    assert_eq!(code, Some(1));
    assert!(stderr.starts_with("cannot read /nonexistent/value: "), "{stderr}");
}
