//! The HTTP stacks the original design named (actix-web, reqwest) against the ones the code
//! uses (hyper's server, hyper-util's pooled client), on the frontend's hot path: a small GET
//! answered with a 100-byte value, one worker thread each.
//!
//! `http-stacks serve hyper|actix PORT` serves `GET /get/?key=K` (any key) until killed; drive
//! it with the bench tool. `http-stacks client hyper|reqwest URL CONCURRENCY SECONDS` keeps
//! CONCURRENCY GETs in flight from one thread for SECONDS and prints requests per second.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const VALUE: &[u8; 100] = &[b'v'; 100];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: http-stacks serve hyper|actix PORT | client hyper|reqwest URL CONCURRENCY SECONDS";
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [_, "serve", "hyper", port] => serve_hyper(port.parse()?),
        [_, "serve", "actix", port] => serve_actix(port.parse()?),
        [_, "client", kind, url, concurrency, seconds] => {
            let rate = client(kind, url, concurrency.parse()?, Duration::from_secs(seconds.parse()?))?;
            println!("{kind} {rate:.0} req/s");
            Ok(())
        }
        _ => anyhow::bail!(usage),
    }
}

fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

fn serve_hyper(port: u16) -> anyhow::Result<()> {
    current_thread()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(VALUE))))
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    })
}

#[actix_web::get("/get/")]
async fn actix_get() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().body(Bytes::from_static(VALUE))
}

fn serve_actix(port: u16) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        actix_web::HttpServer::new(|| actix_web::App::new().service(actix_get))
            .workers(1)
            .bind(("127.0.0.1", port))?
            .run()
            .await
    })?;
    Ok(())
}

/// Closed-loop GETs from one thread; requests per second.
fn client(kind: &str, url: &str, concurrency: usize, duration: Duration) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let url: Arc<str> = Arc::from(format!("{url}/get/?key=k"));
    current_thread()?.block_on(async move {
        let deadline = Instant::now() + duration;
        let hyper_client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<Empty<Bytes>>();
        let reqwest_client = reqwest::Client::new();
        let workers = (0..concurrency).map(|_| {
            let (done, url, hyper_client, reqwest_client) =
                (done.clone(), url.clone(), hyper_client.clone(), reqwest_client.clone());
            let kind = kind.to_owned();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let ok = if kind == "hyper" {
                        let uri: hyper::Uri = url.parse().expect("valid URL");
                        match hyper_client.get(uri).await {
                            Ok(response) => response.into_body().collect().await.is_ok(),
                            Err(_) => false,
                        }
                    } else {
                        match reqwest_client.get(&*url).send().await {
                            Ok(response) => response.bytes().await.is_ok(),
                            Err(_) => false,
                        }
                    };
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        });
        let started = Instant::now();
        for worker in workers.collect::<Vec<_>>() {
            worker.await?;
        }
        Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
    })
}
