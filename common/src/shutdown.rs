//! One shutdown signal for a whole process: SIGINT or SIGTERM flips it once, and every server
//! loop and background task watching it winds down.

use tokio::sync::watch;

/// The sending half: trigger it to begin shutdown.
#[derive(Clone, Debug)]
pub struct Trigger(watch::Sender<bool>);

/// The receiving half, cloned into every task that must stop.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new, untriggered shutdown signal.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Completes once shutdown was triggered (at once if it already was).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|&stop| stop).await;
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }
}

/// Completes on the first SIGINT or SIGTERM.
pub async fn on_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => log::info!("SIGINT received, shutting down"),
        _ = term.recv() => log::info!("SIGTERM received, shutting down"),
    }
}

/// Starts env_logger at `info` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
}
