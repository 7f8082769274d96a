//! `unify watch`: prints the websocket frames of one org, one JSON object per line (a client
//! for demos and debugging; SPEC 5).

use anyhow::Context;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Connects to `server` (an `http://` base URL) and prints every text frame of the org's
/// websocket until the server closes it.
pub async fn run(server: &str, org_id: u64, token: &str, since: Option<u64>) -> anyhow::Result<()> {
    let base = server
        .trim_end_matches('/')
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    let mut url = format!("{base}/api/v1/orgs/{org_id}/ws");
    if let Some(since) = since {
        url.push_str(&format!("?since={since}"));
    }
    let mut request = url.as_str().into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the token is not a valid header value")?,
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    eprintln!("watching org {org_id}");
    while let Some(frame) = socket.next().await {
        match frame? {
            Message::Text(text) => println!("{text}"),
            Message::Close(reason) => {
                eprintln!("closed by the server: {reason:?}");
                break;
            }
            _ => {}
        }
    }
    Ok(())
}
