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

/// A shutdown signal that SIGINT or SIGTERM triggers. Must be called inside a Tokio runtime.
pub fn on_signals() -> Shutdown {
    let (trigger, shutdown) = channel();
    tokio::spawn(async move {
        on_signal().await;
        trigger.trigger();
    });
    shutdown
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

/// Starts env_logger with `filter` (`info`, `debug`, `info,frontend=debug`, ...).
pub fn init_logging(filter: &str) {
    env_logger::Builder::new().parse_filters(filter).format_timestamp_millis().init();
}
