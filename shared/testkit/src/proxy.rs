//! A TCP proxy on 127.0.0.1 that a test can cut and restore, to give a service a real broker
//! outage without stopping the broker other tests share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Forwards connections to `upstream` while enabled.
pub struct TcpProxy {
    pub addr: SocketAddr,
    enabled: Arc<AtomicBool>,
    /// Milliseconds a new connection waits before it is forwarded (a slow network or server).
    connect_delay_ms: Arc<AtomicU64>,
    /// Cancelled to sever every open connection; replaced on each cut.
    severed: Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl TcpProxy {
    /// Starts a proxy on a free local port.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let enabled = Arc::new(AtomicBool::new(true));
        let connect_delay_ms = Arc::new(AtomicU64::new(0));
        let severed = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (en, sev, st, delay) = (enabled.clone(), severed.clone(), stop.clone(), connect_delay_ms.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = st.cancelled() => return,
                };
                let Ok((mut inbound, _)) = accepted else { continue };
                if !en.load(Ordering::SeqCst) {
                    drop(inbound); // refused: the broker is "down"
                    continue;
                }
                let cut = sev.lock().map(|t| t.clone()).unwrap_or_default();
                let delay = Duration::from_millis(delay.load(Ordering::SeqCst));
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.cancelled() => {}
                    }
                });
            }
        });
        Ok(TcpProxy { addr, enabled, connect_delay_ms, severed, stop })
    }

    /// Severs open connections and refuses new ones.
    pub fn cut(&self) {
        self.enabled.store(false, Ordering::SeqCst);
        if let Ok(mut token) = self.severed.lock() {
            token.cancel();
            *token = CancellationToken::new();
        }
    }

    /// Forwards each new connection only after `delay`.
    pub fn delay_connects(&self, delay: Duration) {
        self.connect_delay_ms.store(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.enabled.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}
