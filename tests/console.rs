//! The operator console (SPEC 8b) in a real browser: Debian's Chromium driven through
//! WebDriver (`chromedriver`) against the real server on `127.0.0.1:0`. Without Chromium and
//! its driver the browser test says loudly that it was skipped (`.ci/run` installs them).
//!
//! Run with `UNIFY_UPDATE_SCREENSHOTS=1` to rewrite the README's screenshots in `docs/`.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Server, Tenant};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// How long the browser may take for anything (a loaded 2-core machine, a cold Chromium).
const BROWSER_DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test]
async fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    let s = Server::start().await;
    for (path, content_type) in [
        ("/console", "text/html"),
        ("/console/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/console.css", "text/css"),
        ("/console/vendor/cytoscape-3.35.0.min.js", "text/javascript"),
    ] {
        let response = s
            .client
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{path}: {:?}",
            headers["content-type"]
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    let page = s
        .client
        .get(format!("{}/console", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // No inline script: every <script> element loads a file.
    for tag in page.split("<script").skip(1) {
        assert!(
            tag.trim_start().starts_with("src=") || tag.contains(" src="),
            "{tag}"
        );
    }
    let (status, body) = s.get("/console/nothing.js", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], json!("NOT_FOUND"));
}

#[test]
fn the_cli_prints_a_console_link_with_the_token_in_the_fragment_only() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_unify"))
        .args(["token", "--role", "admin", "--account", "1", "--console"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("UNIFY_LISTEN")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let link = String::from_utf8(output.stdout).unwrap();
    let link = link.trim();
    let (page, token) = link
        .split_once("#token=")
        .unwrap_or_else(|| panic!("no fragment token: {link}"));
    assert_eq!(page, "http://127.0.0.1:8080/console");
    assert!(!page.contains('?'), "{link}");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
}

/// Chromium and chromedriver as Debian installs them.
struct Browser {
    chromium: PathBuf,
    driver: PathBuf,
}

impl Browser {
    fn find() -> Option<Browser> {
        let first = |names: &[&str]| {
            names
                .iter()
                .map(Path::new)
                .find(|p| p.exists())
                .map(Path::to_path_buf)
        };
        Some(Browser {
            chromium: first(&["/usr/bin/chromium", "/usr/bin/chromium-browser"])?,
            driver: first(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])?,
        })
    }

    /// Starts chromedriver on a free port and opens a headless session at 1280×800.
    async fn open(&self) -> (tokio::process::Child, Client) {
        let deadline = Instant::now() + BROWSER_DEADLINE;
        loop {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut driver = tokio::process::Command::new(&self.driver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("chromedriver starts");
            let capabilities = json!({
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": self.chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1280,800",
                        "--hide-scrollbars", "--force-device-scale-factor=1"],
                },
            });
            let capabilities = capabilities.as_object().unwrap().clone();
            while Instant::now() < deadline {
                if driver.try_wait().unwrap().is_some() {
                    break; // the port was taken meanwhile: try another one
                }
                let client =
                    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                        .capabilities(capabilities.clone())
                        .connect(&format!("http://127.0.0.1:{port}"))
                        .await;
                if let Ok(client) = client {
                    client.set_window_size(1280, 800).await.unwrap();
                    return (driver, client);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start a session"
            );
        }
    }
}

/// The page's text at a CSS selector (`None` when nothing matches).
async fn text(c: &Client, css: &str) -> Option<String> {
    let found = c
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            vec![json!(css)],
        )
        .await
        .unwrap();
    found.as_str().map(str::to_owned)
}

/// Polls `condition` on the page until it holds, panicking with `what` after the deadline.
async fn until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + BROWSER_DEADLINE;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn until_text(c: &Client, css: &str, wanted: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + BROWSER_DEADLINE;
    while !text(c, css).await.is_some_and(|t| wanted(&t)) {
        if Instant::now() > deadline {
            let page = text(c, "body").await;
            panic!(
                "timed out waiting for {css}: {:?}; the page: {page:?}",
                text(c, css).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Creates a member and returns its id.
async fn member(s: &Server, t: &Tenant, ext: &str, fields: Value) -> u64 {
    s.create_member(t, ext, fields).await["id"]
        .as_u64()
        .unwrap()
}

/// The graph the page drew, read from its cytoscape instance: sorted node ids and sorted
/// `(source, target, refused)` edges.
async fn drawn(c: &Client) -> (Vec<String>, Vec<(String, String, bool)>) {
    let graph = c
        .execute(
            "const cy = window.unifyConsole.cy;
             return { nodes: cy.nodes().map(n => n.id()),
                      edges: cy.edges().map(e => [e.source().id(), e.target().id(), e.hasClass('refused')]) };",
            vec![],
        )
        .await
        .unwrap();
    let mut nodes: Vec<String> = serde_json::from_value(graph["nodes"].clone()).unwrap();
    let mut edges: Vec<(String, String, bool)> =
        serde_json::from_value(graph["edges"].clone()).unwrap();
    nodes.sort();
    edges.sort();
    (nodes, edges)
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let dir = if std::env::var_os("UNIFY_UPDATE_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs")
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_merge_live_draws_it_and_splits_a_member() {
    let Some(browser) = Browser::find() else {
        eprintln!(
            "\n*** SKIPPED: the console browser test needs Debian's chromium and \
             chromium-driver (apt-get install -y chromium chromium-driver; .ci/run does) ***\n"
        );
        return;
    };
    let s = Server::start().await;
    let t = s.tenant("acme").await;
    let (status, setting) = s
        .post(
            &t.path("/organization/unify-scope-setting"),
            &t.admin,
            json!({ "unify_keys": [
                { "attribute": "custom_id", "is_distinct": true },
                { "attribute": "display_email", "is_distinct": false },
                { "attribute": "display_mobile", "is_distinct": false } ] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{setting}");
    let (_driver, c) = browser.open().await;
    let console = format!("{}/console", s.base);

    // Sign in by pasting the token.
    c.goto(&console).await.unwrap();
    until("the sign-in form", || async {
        text(&c, "#sign-in").await.is_some()
    })
    .await;
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(&t.admin)
        .await
        .unwrap();
    click(&c, "#sign-in button[type=submit]").await;
    until_text(&c, "#keys", |k| {
        k.contains("display_email") && k.contains("distinct")
    })
    .await;
    until_text(&c, "#live", |l| l == "live").await;

    // A member's profile page, then a second member sharing the email, created through the
    // API: the merge appears without a reload.
    let a = member(
        &s,
        &t,
        "kevin-line",
        json!({ "display_email": "kevin@example.com", "display_mobile": "0912 345 678",
                "custom_id": "K1", "display_name": "Kevin" }),
    )
    .await;
    c.goto(&format!("{console}#/profile/{a}")).await.unwrap();
    until_text(&c, "#profile-size", |n| n == "1").await;
    let marker = c
        .execute("window.notReloaded = true; return true;", vec![])
        .await
        .unwrap();
    assert_eq!(marker, json!(true));
    let b = member(
        &s,
        &t,
        "kevin-web",
        json!({ "display_email": " Kevin@Example.COM", "display_name": "K. Web" }),
    )
    .await;
    until_text(&c, "#profile-size", |n| n == "2").await;
    let still = c
        .execute("return window.notReloaded === true;", vec![])
        .await
        .unwrap();
    assert_eq!(still, json!(true), "the page was not reloaded");
    until_text(&c, "#profile-members", |m| m.contains(&format!("#{b}"))).await;

    // A third member holds the email too but another distinct custom id: its link is refused.
    let other = member(
        &s,
        &t,
        "kevin-shop",
        json!({ "display_email": "kevin@example.com", "custom_id": "K2",
                "display_name": "Other Kevin" }),
    )
    .await;

    // The graph: the three members, their key nodes, their links and the refused one.
    let (ma, mb, mc) = (
        format!("member:{a}"),
        format!("member:{b}"),
        format!("member:{other}"),
    );
    let (email, mobile) = (
        "key:display_email:kevin@example.com".to_owned(),
        "key:display_mobile:+886912345678".to_owned(),
    );
    let (k1, k2) = ("key:custom_id:K1".to_owned(), "key:custom_id:K2".to_owned());
    until("the graph of the cluster", || async {
        drawn(&c).await.0.len() == 7
    })
    .await;
    let (nodes, edges) = drawn(&c).await;
    assert_eq!(
        nodes,
        vec![
            k1.clone(),
            k2.clone(),
            email.clone(),
            mobile.clone(),
            ma.clone(),
            mb.clone(),
            mc.clone()
        ]
    );
    assert_eq!(
        edges,
        vec![
            (ma.clone(), k1.clone(), false),
            (ma.clone(), email.clone(), false),
            (ma.clone(), mobile.clone(), false),
            (mb.clone(), email.clone(), false),
            (mc.clone(), k2.clone(), false),
            (mc.clone(), email.clone(), true),
        ]
    );
    until_text(&c, "#profile-size", |n| n == "2").await;
    // The refused link is explained between the first and the third member.
    c.find(Locator::Id("explain-b"))
        .await
        .unwrap()
        .select_by_value(&other.to_string())
        .await
        .unwrap();
    click(&c, "#explain button[type=submit]").await;
    until_text(&c, "#explain-refused", |r| r.contains("distinct_conflict")).await;
    // The explanation path between the two members of the profile is highlighted.
    c.find(Locator::Id("explain-b"))
        .await
        .unwrap()
        .select_by_value(&b.to_string())
        .await
        .unwrap();
    click(&c, "#explain button[type=submit]").await;
    until_text(&c, "#explain-result", |r| r.starts_with("One profile")).await;
    let path = c
        .execute(
            "return window.unifyConsole.cy.$('.path').map(e => e.id()).sort();",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        path,
        json!([
            format!("e:{ma}|{email}"),
            format!("e:{mb}|{email}"),
            email.clone(),
            ma.clone(),
            mb.clone()
        ])
    );
    c.execute(
        "document.getElementById('graph-h').scrollIntoView();",
        vec![],
    )
    .await
    .unwrap();
    screenshot(&c, "console-graph.png").await;

    // Cancel the second member's unification from its page, confirming.
    c.goto(&format!("{console}#/member/{b}")).await.unwrap();
    until_text(&c, "#lock", |l| l == "automatic").await;
    click(&c, "#cancel-unification").await;
    until("the confirmation dialog", || async {
        c.execute("return document.getElementById('confirm').open;", vec![])
            .await
            .unwrap()
            == json!(true)
    })
    .await;
    click(&c, "#confirm-yes").await;
    until_text(&c, "#lock", |l| l == "locked by an operator").await;
    let (_, profile) = s
        .get(
            &t.path(&format!("/chat/members/{a}/unify-profile")),
            &t.admin,
        )
        .await;
    assert_eq!(profile["member_ids"], json!([a]), "split: {profile}");
    c.goto(&format!("{console}#/profile/{a}")).await.unwrap();
    until_text(&c, "#profile-size", |n| n == "1").await;
    until("the split graph", || async { drawn(&c).await.0.len() == 6 }).await;

    // Find the first member by a differently formatted mobile.
    c.goto(&format!("{console}#/find")).await.unwrap();
    until("the find form", || async {
        text(&c, "#find").await.is_some()
    })
    .await;
    c.find(Locator::Id("find-by"))
        .await
        .unwrap()
        .select_by_value("display_mobile")
        .await
        .unwrap();
    c.find(Locator::Id("find-value"))
        .await
        .unwrap()
        .send_keys("+886 912-345-678")
        .await
        .unwrap();
    click(&c, "#find button[type=submit]").await;
    until_text(&c, "#find-table", |r| r.contains(&format!("#{a}"))).await;
    let found = text(&c, "#find-table").await.unwrap();
    assert!(!found.contains(&format!("#{b}")), "{found}");

    // Sign out, and in again with the link `unify token --console` prints: the scope page
    // follows events live.
    click(&c, "#sign-out").await;
    until("the sign-in form", || async {
        text(&c, "#sign-in").await.is_some()
    })
    .await;
    c.goto(&unify::console_link(&s.addr.to_string(), &t.admin))
        .await
        .unwrap();
    until_text(&c, "#keys", |k| k.contains("display_mobile")).await;
    let url = c.current_url().await.unwrap();
    assert!(
        !url.as_str().contains("token"),
        "the token left the URL: {url}"
    );
    until_text(&c, "#live", |l| l == "live").await;
    member(
        &s,
        &t,
        "mei",
        json!({ "display_mobile": "0911-222-333", "display_name": "Mei" }),
    )
    .await;
    member(
        &s,
        &t,
        "mei-web",
        json!({ "display_mobile": "+886911222333" }),
    )
    .await;
    until_text(&c, "#feed", |f| f.contains("profile_updated")).await;
    screenshot(&c, "console-scope.png").await;

    // At phone width nothing needs horizontal scrolling.
    c.set_window_size(390, 844).await.unwrap();
    let deadline = Instant::now() + BROWSER_DEADLINE;
    loop {
        let wide = c
            .execute(
                "return [...document.querySelectorAll('body *')]
                   .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                   .map(e => e.tagName + '#' + e.id + '.' + e.className).slice(0, 5);",
                vec![],
            )
            .await
            .unwrap();
        if wide == json!([]) {
            break;
        }
        assert!(Instant::now() < deadline, "wider than a phone: {wide}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.set_window_size(1280, 800).await.unwrap();

    // Import an NDJSON file from the page: its progress and its first error.
    let file = tempfile::Builder::new()
        .suffix(".ndjson")
        .tempfile()
        .unwrap();
    let lines = format!(
        "{}\n{}\n",
        json!({ "channel_id": t.channel_id, "external_member_id": "imported-1" }),
        json!({ "channel_id": t.channel_id, "external_member_id": "imported-2", "colour": "red" }),
    );
    std::fs::write(file.path(), lines).unwrap();
    c.goto(&format!("{console}#/import")).await.unwrap();
    c.wait()
        .at_most(BROWSER_DEADLINE)
        .for_element(Locator::Id("import-file"))
        .await
        .unwrap()
        .send_keys(file.path().to_str().unwrap())
        .await
        .unwrap();
    click(&c, "#import button[type=submit]").await;
    until_text(&c, "#import-status", |s| {
        s.contains("finished: 1 imported, 1 refused")
    })
    .await;
    until_text(&c, "#import-errors", |e| e.contains("INVALID_ARGUMENT")).await;

    c.close().await.unwrap();
    s.stop().await;
}
