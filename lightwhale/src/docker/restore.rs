//! `POST /containers/{id}/start?checkpoint=...`, which bollard 0.21 does not
//! offer: its start options carry no checkpoint. The request is small
//! enough to send by hand over the engine's Unix socket.

use std::{path::Path, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::UnixStream,
    time::timeout,
};

/// Starts container `id` from `checkpoint` and returns once the engine
/// responded, or an error message with the engine's own explanation.
pub async fn start_from_checkpoint(
    socket: &Path,
    api_version: bollard::ClientVersion,
    id: &str,
    checkpoint: &str,
    limit: Duration,
) -> Result<(), String> {
    let request = format!(
        "POST /v{}.{}/containers/{}/start?checkpoint={} HTTP/1.1\r\n\
         Host: docker\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        api_version.major_version,
        api_version.minor_version,
        url_component(id),
        url_component(checkpoint),
    );

    let exchange = async {
        let mut stream = UnixStream::connect(socket).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = match timeout(limit, exchange).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return Err(format!("request to {} failed: {error}", socket.display())),
        Err(_) => return Err(format!("the engine did not answer within {}", humantime::format_duration(limit))),
    };

    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("unreadable response: {:?}", text.lines().next().unwrap_or("")))?;
    match status {
        // 204: started; 304: it already runs.
        204 | 304 => Ok(()),
        _ => Err(format!("engine returned {status}: {}", error_message(&text))),
    }
}

/// Extracts the `message` of a Docker error body, or the raw body.
fn error_message(response: &str) -> String {
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or("");
    // The body may be chunked: the JSON object sits between the braces.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) if start < end => &body[start..=end],
        _ => return body.trim().to_owned(),
    };
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|value| value.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| json.to_owned())
}

/// Percent-encodes everything but unreserved characters.
fn url_component(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message_from_chunked_body() {
        let response = "HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n2a\r\n{\"message\":\"criu failed: type RESTORE\"}\n\r\n0\r\n\r\n";
        assert_eq!(error_message(response), "criu failed: type RESTORE");
    }

    #[test]
    fn url_component_escapes_reserved_characters() {
        assert_eq!(url_component("lightwhale-1"), "lightwhale-1");
        assert_eq!(url_component("a b&c"), "a%20b%26c");
    }
}
