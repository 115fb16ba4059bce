//! Serving one accepted TCP connection: hyper's HTTP/1.1 with upgrades, closed
//! when its phase outlives its deadline (header read, request, keep-alive idle,
//! WebSocket handshake) or when the engine gives up the event stream it writes,
//! and shut down gracefully when the server stops.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower_service::Service as _;

use crate::api::ApiError;
use crate::connection_io::ConnectionIo;
use crate::limits::HttpLimits;
use crate::phase::ConnectionPhase;
use crate::slots::Slot;

/// Serves `tcp` until it closes, its phase's deadline passes, or (after `stop`
/// turns true) its in-flight request is answered.
pub(crate) async fn serve(
    tcp: TcpStream,
    slot: Slot,
    router: Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) {
    let phase = Arc::new(ConnectionPhase::accepted(&limits));
    let io = TokioIo::new(ConnectionIo::new(tcp, phase.clone(), slot));
    let service = AppService {
        router,
        phase: phase.clone(),
    };
    let mut conn = pin!(
        http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades()
    );
    let mut stopping = false;
    loop {
        let deadline = phase.deadline();
        let abort = phase.stream_abort();
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = phase.changed() => {}
            () = until(deadline) => {
                // Dropping the connection closes the socket: a request head, a
                // request, an idle keep-alive or a handshake took too long. Nothing
                // is answered: there is no request to answer, or it is past its time.
                tracing::debug!("closing a connection past its deadline");
                return;
            }
            () = aborted(abort) => {
                // The engine gave up the event stream (its client stopped reading):
                // hyper, blocked writing to it, would hold the socket forever.
                tracing::debug!("closing a connection whose event stream was given up");
                return;
            }
            () = stopped(&mut stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Resolves at `deadline`; never without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves once the event stream of `abort` is given up; never without one.
async fn aborted(abort: Option<realtime::StreamAbort>) {
    match abort {
        Some(abort) => abort.aborted().await,
        None => std::future::pending().await,
    }
}

/// Resolves once `stop` is true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The router behind one connection, reporting each request's start and end to
/// the connection's phase.
struct AppService {
    router: Router,
    phase: Arc<ConnectionPhase>,
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<PhaseBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for AppService {
    type Response = Response<PhaseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> ResponseFuture {
        let upgrade = request.headers().contains_key(header::UPGRADE);
        let phase = self.phase.clone();
        if !phase.request(upgrade) {
            // The handshake already took its whole upgrade timeout (a slowly sent
            // head): answered without reaching the app, and the connection closes.
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "upgrade_timeout",
                "the WebSocket handshake took longer than the upgrade timeout",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            phase.response_ready();
            return Box::pin(std::future::ready(Ok(PhaseBody::wrap(response, phase))));
        }
        let mut router = self.router.clone();
        let response = router.call(request.map(Body::new));
        Box::pin(async move {
            let mut response = response.await.unwrap_or_else(|e| match e {});
            if let Some(abort) = response.extensions_mut().remove::<realtime::StreamAbort>() {
                phase.streaming(abort);
            }
            phase.response_ready();
            Ok(PhaseBody::wrap(response, phase))
        })
    }
}

/// A response body that tells the connection's phase when hyper is done with it.
pub(crate) struct PhaseBody {
    body: Body,
    phase: Arc<ConnectionPhase>,
    switched_protocols: bool,
}

impl PhaseBody {
    fn wrap(response: Response<Body>, phase: Arc<ConnectionPhase>) -> Response<PhaseBody> {
        let switched_protocols = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        response.map(|body| PhaseBody {
            body,
            phase,
            switched_protocols,
        })
    }
}

impl Drop for PhaseBody {
    fn drop(&mut self) {
        self.phase.response_done(self.switched_protocols);
    }
}

impl HttpBody for PhaseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
