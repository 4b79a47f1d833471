//! A small OpenTelemetry collector for the tests: an OTLP/gRPC trace
//! receiver on loopback that keeps every span it is sent, with the
//! attributes of the resource (the daemon) that sent it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::proto::opentelemetry::proto::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use common::proto::opentelemetry::proto::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use common::proto::opentelemetry::proto::common::v1::any_value;
use common::proto::opentelemetry::proto::trace::v1::Span;

/// A span received, with its sender's resource attributes.
#[derive(Debug, Clone)]
pub struct Received {
    pub resource: HashMap<String, String>,
    pub span: Span,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.0.lock().expect("spans");
        for rs in req.into_inner().resource_spans {
            let resource: HashMap<String, String> = rs
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|kv| match kv.value?.value? {
                    any_value::Value::StringValue(s) => Some((kv.key, s)),
                    _ => None,
                })
                .collect();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    kept.push(Received {
                        resource: resource.clone(),
                        span,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A running receiver; stops with the test process.
pub struct Collector {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    pub fn start() -> Collector {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let receiver = Receiver::default();
        let spans = receiver.0.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                listener.set_nonblocking(true).expect("nonblocking");
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let _ = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(receiver))
                    .serve_with_incoming(incoming)
                    .await;
            });
        });
        Collector { addr, spans }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().expect("spans").clone()
    }

    /// Wait (up to 20 s) until the spans received satisfy `done`; all
    /// spans then. Each daemon exports on its own, so a trace's spans
    /// arrive in any order.
    pub fn wait_until(&self, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let spans = self.spans();
            if done(&spans) || std::time::Instant::now() > deadline {
                return spans;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
