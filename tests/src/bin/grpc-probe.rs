//! `grpc-probe SOCKET health|reflection`: one call of the standard gRPC health or reflection
//! service over a Unix socket, for e2e tests that need a client other than `ctl` (and run
//! it as another uid). Prints `ok DETAIL` (exit 0) or `CODE MESSAGE` (exit 1).

use hyper_util::rt::TokioIo;
use std::process::ExitCode;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

async fn connect(socket: String) -> Result<Channel, String> {
    Endpoint::try_from("http://probe.invalid")
        .map_err(|e| e.to_string())?
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| format!("cannot connect: {e:?}"))
}

async fn health(channel: Channel) -> Result<String, tonic::Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(format!("{:?}", response.into_inner().status()))
}

async fn reflection(channel: Channel) -> Result<String, tonic::Status> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    match replies.message().await?.and_then(|r| r.message_response) {
        Some(MessageResponse::ListServicesResponse(list)) => Ok(list
            .service
            .into_iter()
            .map(|s| s.name)
            .collect::<Vec<_>>()
            .join(",")),
        other => Ok(format!("unexpected reply {other:?}")),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, what] = <[String; 2]>::try_from(args).unwrap_or_default();
    let channel = match connect(socket).await {
        Ok(c) => c,
        Err(e) => {
            println!("unreachable {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match what.as_str() {
        "health" => health(channel).await,
        "reflection" => reflection(channel).await,
        _ => {
            eprintln!("usage: grpc-probe SOCKET health|reflection");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(detail) => {
            println!("ok {detail}");
            ExitCode::SUCCESS
        }
        Err(status) => {
            println!("{:?} {}", status.code(), status.message());
            ExitCode::FAILURE
        }
    }
}
