//! End-to-end test of the search page (`assets/index.html`): a headless Chromium, driven through
//! chromedriver over W3C WebDriver (plain HTTP + JSON), searches a demo server that serves a
//! tiny model trained on a small synthetic world.
//!
//! Needs Chromium and chromedriver: `/usr/bin/chromium` and `/usr/bin/chromedriver`, or the
//! paths in `CHROME` and `CHROMEDRIVER`; `scripts/install-browser.sh` installs both. Without them
//! the test prints why and passes, except under CI (`CI=true`), where it fails
//! (`aisle_fixtures::skip_or_fail`).
//!
//! A screenshot of the page after the search is written to `target/browser-test.png`
//! (`target/browser-test-failure.png` when the test fails), for humans to look at.

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use serde_json::{json, Value};
use support::DemoServer;

/// The longest any single wait (chromedriver start-up, the page's users, a search) may take.
const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);
/// How long one HTTP request to chromedriver or the demo server may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Queries tried, in order, to find a product title whose first word then becomes the query.
const SEED_QUERIES: &[&str] = &["shoes", "product", "red", "a"];

type Result<T> = std::result::Result<T, String>;

#[test]
fn search_page_shows_plain_and_personalized_results() {
    let (chromedriver, chrome) = match browser_binaries() {
        Ok(found) => found,
        Err(why) => {
            aisle_fixtures::skip_or_fail(&format!(
                "the browser test needs Chromium and chromedriver: {why} (run \
                 scripts/install-browser.sh)"
            ));
            return;
        }
    };

    let server = DemoServer::start().expect("start the demo server (tests/support)");
    let base = server.url();
    let user = server.user_with_history();
    let http = agent(REQUEST_TIMEOUT);

    // What the page should show, straight from the API.
    let word = pick_query(&http, &base).expect("find a query word in the demo world");
    let plain_api = search_api(&http, &base, &word, None).expect("GET /search (plain)");
    let personal_api = search_api(&http, &base, &word, Some(&user)).expect("GET /search (user)");
    assert_eq!(
        personal_api["personalized"],
        json!(true),
        "the API does not personalize {word:?} for user_with_history() {user:?}: {personal_api}"
    );
    println!("browser test: query {word:?}, customer {user:?}, server {base}");

    let wd = WebDriver::start(&chromedriver, &chrome)
        .expect("start chromedriver and a headless Chromium session");
    let outcome = scenario(&wd, &base, &user, &word, &plain_api, &personal_api);

    let shot = screenshot_path(outcome.is_ok());
    match wd.screenshot().and_then(|png| {
        std::fs::write(&shot, png).map_err(|e| format!("write {}: {e}", shot.display()))
    }) {
        Ok(()) => println!("browser test screenshot: {}", shot.display()),
        Err(e) => eprintln!("browser test: no screenshot: {e}"),
    }
    if let Err(e) = outcome {
        let page = wd.diagnostics();
        panic!("browser test failed: {e}\n--- page ---\n{page}");
    }
}

/// The user's path through the page. Any failure comes back as an error (not a panic) so the
/// caller can still take a screenshot and describe the page.
fn scenario(
    wd: &WebDriver,
    base: &str,
    user: &str,
    word: &str,
    plain_api: &Value,
    personal_api: &Value,
) -> Result<()> {
    wd.navigate(&format!("{base}/"))?;

    // The customer picker fills itself from GET /users.
    let options = wd.wait_until("the customer picker to fill from /users", || {
        let v = wd.execute(
            "const s = document.getElementById('user');
             return s ? Array.from(s.options).map(o => o.value) : null;",
            json!([]),
        )?;
        let values: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Ok((values.len() > 1).then_some(values))
    })?;
    if options.first().map(String::as_str) != Some("") {
        return Err(format!(
            "the first customer option should be \"(no customer)\" with value \"\": {options:?}"
        ));
    }
    if !options.iter().any(|o| o == user) {
        // Not among the top customers the page lists: open the page on a link that names them.
        println!("browser test: {user:?} is not in GET /users?limit=20; opening /?user=");
        wd.navigate(&format!("{base}/?user={}", percent_encode(user)))?;
        wd.wait_until(
            "the page opened with ?user= to select that customer",
            || {
                let v = wd.execute("return document.getElementById('user').value;", json!([]))?;
                Ok((v.as_str() == Some(user)).then_some(()))
            },
        )?;
    }

    // Type the query, pick the customer, press the button.
    let q = wd.find("#q")?;
    wd.clear(&q)?;
    wd.send_keys(&q, word)?;
    let option = wd.execute(
        "return Array.from(document.querySelectorAll('#user option'))
                .find(o => o.value === arguments[0]) || null;",
        json!([user]),
    )?;
    let option = element_id(&option).ok_or_else(|| format!("no <option> for {user:?}"))?;
    wd.click(&option)?;
    let picked = wd.execute("return document.getElementById('user').value;", json!([]))?;
    if picked.as_str() != Some(user) {
        return Err(format!("picking {user:?} left the select at {picked}"));
    }
    let go = wd.find("#go")?;
    wd.click(&go)?;
    wait_for_done(wd, "the search with a customer")?;

    // Both columns, as the API ranks them.
    let plain_hits = wd.find_all("#plain .hit")?;
    let personal_hits = wd.find_all("#personal .hit")?;
    expect_hits("#plain", plain_hits.len(), plain_api)?;
    expect_hits("#personal", personal_hits.len(), personal_api)?;
    expect_first_title(wd, "#plain", plain_api)?;
    expect_first_title(wd, "#personal", personal_api)?;
    let first_plain = wd.text(&plain_hits[0])?;
    if let Some(path) = first_path(plain_api) {
        if !first_plain.contains(&path) {
            return Err(format!(
                "the first plain hit does not show its path {path:?}: {first_plain:?}"
            ));
        }
    }

    // The personal column says it is personalized, and for whom.
    let flag = wd.execute(
        "return document.getElementById('personal').dataset.personalized;",
        json!([]),
    )?;
    let head = wd.text(&wd.find("#personal .col-head")?)?;
    if flag.as_str() != Some("true") || !head.contains("Personalized for") || !head.contains(user) {
        return Err(format!(
            "#personal should say it is personalized for {user} (data-personalized={flag}): \
             {head:?}"
        ));
    }
    expect_no_error(wd)?;

    // Enter in the box searches too; with no customer the personal column says so.
    let none = wd.execute(
        "return document.querySelector('#user option[value=\"\"]');",
        json!([]),
    )?;
    let none = element_id(&none).ok_or("no \"(no customer)\" option")?;
    wd.click(&none)?;
    wait_for_done(wd, "the re-search after clearing the customer")?;
    wd.execute("document.body.dataset.state = 'test-reset';", json!([]))?;
    let q = wd.find("#q")?;
    wd.send_keys(&q, "\u{E007}")?; // Enter
    wait_for_done(wd, "the search started with Enter")?;
    expect_hits("#plain", wd.find_all("#plain .hit")?.len(), plain_api)?;
    let personal_text = wd.text(&wd.find("#personal")?)?;
    let flag = wd.execute(
        "return document.getElementById('personal').dataset.personalized;",
        json!([]),
    )?;
    if !wd.find_all("#personal .hit")?.is_empty()
        || flag.as_str() != Some("false")
        || !personal_text.to_lowercase().contains("no customer")
    {
        return Err(format!(
            "with no customer picked, #personal should say so and list nothing: {personal_text:?}"
        ));
    }
    expect_no_error(wd)?;

    // A hit's taxonomy path narrows the search to its category; the chip's x widens it again.
    let path = wd.find("#plain .hit button.path")?;
    let wanted = wd.execute(
        "return arguments[0].textContent;",
        json!([element_ref(&path)]),
    )?;
    wd.click(&path)?;
    wait_for_done(wd, "the search narrowed to a category")?;
    let paths = wd.execute(
        "return Array.from(document.querySelectorAll('#plain .hit .path')).map(e => e.textContent);",
        json!([]),
    )?;
    let paths = paths.as_array().cloned().unwrap_or_default();
    if paths.is_empty() || paths.iter().any(|p| *p != wanted) {
        return Err(format!(
            "after clicking the path {wanted}, every plain hit should be in it: {paths:?}"
        ));
    }
    expect_no_error(wd)?;
    wd.click(&wd.find(".filter-chip button")?)?;
    wait_for_done(wd, "the search with the category filter removed")?;

    // Leave the personalized, unfiltered search on screen for the screenshot.
    wd.click(&option)?;
    wait_for_done(wd, "the re-search after picking the customer again")?;
    expect_hits("#plain", wd.find_all("#plain .hit")?.len(), plain_api)?;
    expect_hits(
        "#personal",
        wd.find_all("#personal .hit")?.len(),
        personal_api,
    )?;
    expect_first_title(wd, "#personal", personal_api)?;
    expect_no_error(wd)?;
    Ok(())
}

fn wait_for_done(wd: &WebDriver, what: &str) -> Result<()> {
    wd.wait_until(&format!("body[data-state=done] after {what}"), || {
        let state = wd.execute("return document.body.dataset.state || '';", json!([]))?;
        match state.as_str() {
            Some("done") => Ok(Some(())),
            Some("error") => Err(format!(
                "the page reports an error after {what}: {}",
                wd.execute(
                    "return document.getElementById('error').textContent;",
                    json!([])
                )?
            )),
            _ => Ok(None),
        }
    })
}

fn expect_hits(column: &str, shown: usize, api: &Value) -> Result<()> {
    let expected = api["results"].as_array().map_or(0, Vec::len);
    if shown == 0 || shown != expected {
        return Err(format!(
            "{column} shows {shown} .hit elements, the API returned {expected} results"
        ));
    }
    Ok(())
}

fn expect_first_title(wd: &WebDriver, column: &str, api: &Value) -> Result<()> {
    let want = api["results"][0]["title"].as_str().unwrap_or_default();
    let got = wd.text(&wd.find(&format!("{column} .hit .title"))?)?;
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    if squash(&got) != squash(want) {
        return Err(format!(
            "{column}: first title {got:?}, the API ranks {want:?} first"
        ));
    }
    Ok(())
}

fn expect_no_error(wd: &WebDriver) -> Result<()> {
    let v = wd.execute(
        "const e = document.getElementById('error');
         const shown = e && !e.hidden ? e.textContent.trim() : '';
         const cols = Array.from(document.querySelectorAll('.col-error')).map(x => x.textContent);
         return [shown, ...cols].filter(Boolean).join(' | ');",
        json!([]),
    )?;
    match v.as_str() {
        Some("") => Ok(()),
        _ => Err(format!("the page shows an error: {v}")),
    }
}

fn first_path(api: &Value) -> Option<String> {
    let parts: Vec<&str> = api["results"][0]["path"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    (!parts.is_empty()).then(|| parts.join(" > "))
}

/// A query the demo world answers: the first word of the top title for one of [`SEED_QUERIES`].
fn pick_query(http: &ureq::Agent, base: &str) -> Result<String> {
    let mut tried = Vec::new();
    for seed in SEED_QUERIES {
        let answer = match get_json(http, &format!("{base}/search"), &[("q", seed), ("k", "1")]) {
            Ok(v) => v,
            Err(e) => {
                tried.push(format!("{seed:?}: {e}"));
                continue;
            }
        };
        let Some(title) = answer["results"][0]["title"].as_str() else {
            tried.push(format!("{seed:?}: no results"));
            continue;
        };
        let words: Vec<&str> = title
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let Some(word) = words
            .iter()
            .find(|w| w.chars().count() >= 3 && w.chars().any(char::is_alphabetic))
            .or(words.first())
        else {
            tried.push(format!("{seed:?}: title {title:?} has no word"));
            continue;
        };
        let word = word.to_lowercase();
        match search_api(http, base, &word, None) {
            Ok(v) if v["results"].as_array().is_some_and(|r| !r.is_empty()) => return Ok(word),
            Ok(_) => tried.push(format!("{word:?} (from {title:?}): no results")),
            Err(e) => tried.push(format!("{word:?} (from {title:?}): {e}")),
        }
    }
    Err(format!("no usable query: {}", tried.join("; ")))
}

/// `GET /search` as the page sends it (k 10, explanations on).
fn search_api(http: &ureq::Agent, base: &str, q: &str, user: Option<&str>) -> Result<Value> {
    let mut query = vec![("q", q), ("k", "10"), ("explain", "true")];
    if let Some(u) = user {
        query.push(("user", u));
    }
    get_json(http, &format!("{base}/search"), &query)
}

fn get_json(http: &ureq::Agent, url: &str, query: &[(&str, &str)]) -> Result<Value> {
    let mut request = http.get(url);
    for (k, v) in query {
        request = request.query(k, v);
    }
    let response = request.call().map_err(|e| format!("GET {url}: {e}"))?;
    let (status, body) = read_body(response).map_err(|e| format!("GET {url}: {e}"))?;
    if status != 200 {
        return Err(format!("GET {url} {query:?}: HTTP {status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {url}: not JSON ({e}): {body}"))
}

fn read_body(mut response: ureq::http::Response<ureq::Body>) -> Result<(u16, String)> {
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .map_err(|e| format!("reading the response: {e}"))?;
    Ok((status, body))
}

/// An HTTP client that hands back 4xx/5xx answers (WebDriver errors live in their bodies) and
/// never goes through a proxy from the environment (everything here is on 127.0.0.1).
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .proxy(None)
        .build()
        .into()
}

/// chromedriver and Chromium, or why they are missing.
fn browser_binaries() -> Result<(PathBuf, PathBuf)> {
    let driver = locate(
        "CHROMEDRIVER",
        &["/usr/bin/chromedriver"],
        &["chromedriver"],
    );
    let chrome = locate(
        "CHROME",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        &["chromium", "chromium-browser", "google-chrome"],
    );
    match (driver, chrome) {
        (Ok(d), Ok(c)) => Ok((d, c)),
        (d, c) => Err([d.err(), c.err()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ")),
    }
}

/// `$env` when set, else the first of `defaults`, else the first of `names` on `PATH`.
fn locate(env: &str, defaults: &[&str], names: &[&str]) -> Result<PathBuf> {
    if let Some(value) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{env}={} is not a file", path.display()))
        };
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    defaults
        .iter()
        .map(PathBuf::from)
        .chain(
            names
                .iter()
                .flat_map(|n| on_path.iter().map(move |d| d.join(n))),
        )
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{} not found (or set {env})", defaults[0]))
}

/// `target/browser-test.png`, next to the build's own `target/tmp`.
fn screenshot_path(ok: bool) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp);
    dir.join(if ok {
        "browser-test.png"
    } else {
        "browser-test-failure.png"
    })
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind a port: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("local address: {e}"))?
        .port();
    Ok(port)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An element reference as a script argument.
fn element_ref(id: &str) -> Value {
    json!({ ELEMENT: id })
}

fn element_id(v: &Value) -> Option<String> {
    v.get(ELEMENT).and_then(Value::as_str).map(String::from)
}

/// A chromedriver process and one browser session on it. Dropping it (also while unwinding from
/// a panic) deletes the session, which closes Chromium, then kills chromedriver.
struct WebDriver {
    http: ureq::Agent,
    /// `http://127.0.0.1:PORT`
    base: String,
    session: Option<String>,
    child: Child,
    log: PathBuf,
    /// Chromium's profile and chromedriver's log; removed after both are gone.
    dir: tempfile::TempDir,
}

impl WebDriver {
    fn start(chromedriver: &Path, chrome: &Path) -> Result<WebDriver> {
        let dir = tempfile::Builder::new()
            .prefix("aisle-browser-test-")
            .tempdir()
            .map_err(|e| format!("create a temporary directory: {e}"))?;
        let profile = dir.path().join("profile");
        let log = dir.path().join("chromedriver.log");
        let out = File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("clone the log file handle: {e}"))?;
        let port = free_port()?;
        // Chromium's own messages go into the same log (`--enable-chrome-logs`), so a browser
        // that dies at start-up says why; its home is the temporary directory, so nothing in the
        // runner's HOME (read-only, full, or locked by an earlier run) can stop it.
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).map_err(|e| format!("create {}: {e}", home.display()))?;
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg("--enable-chrome-logs")
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            // No D-Bus: a bus that exists but does not answer can stall Chromium's start-up
            // for longer than chromedriver waits for it.
            .env("DBUS_SESSION_BUS_ADDRESS", "disabled:")
            .env("DBUS_SYSTEM_BUS_ADDRESS", "disabled:")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("run {}: {e}", chromedriver.display()))?;
        let mut wd = WebDriver {
            http: agent(REQUEST_TIMEOUT),
            base: format!("http://127.0.0.1:{port}"),
            session: None,
            child,
            log,
            dir,
        };
        wd.wait_ready()?;

        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chrome.to_string_lossy(),
                        "args": [
                            "--headless",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            "--disable-quic",
                            "--no-first-run",
                            "--no-proxy-server",
                            "--window-size=1300,1000",
                            format!("--user-data-dir={}", profile.display()),
                        ],
                    },
                },
            },
        });
        let url = format!("{}/session", wd.base);
        let created = match wd.request("POST", &url, Some(capabilities.clone())) {
            Ok(created) => created,
            Err(first) => {
                // One more try with a fresh profile: a start-up that timed out under load is
                // not the page's fault. The first failure is printed either way.
                eprintln!(
                    "browser test: the first session failed: {first}\n{}\n--- chromedriver log ---\n{}",
                    machine_state(wd.dir.path()),
                    log_tail(&wd.log)
                );
                let mut retry = capabilities;
                if let Some(args) = retry["capabilities"]["alwaysMatch"]["goog:chromeOptions"]
                    ["args"]
                    .as_array_mut()
                {
                    args.retain(|a| !a.as_str().is_some_and(|a| a.starts_with("--user-data-dir")));
                    args.push(json!(format!(
                        "--user-data-dir={}",
                        wd.dir.path().join("profile-2").display()
                    )));
                }
                wd.request("POST", &url, Some(retry)).map_err(|e| {
                    format!(
                        "{e}\n{}\n--- chromedriver log ---\n{}",
                        machine_state(wd.dir.path()),
                        log_tail(&wd.log)
                    )
                })?
            }
        };
        let session = created["sessionId"]
            .as_str()
            .ok_or_else(|| format!("POST /session: no sessionId in {created}"))?;
        wd.session = Some(session.to_string());
        Ok(wd)
    }

    /// Polls `GET /status` until chromedriver says it is ready.
    fn wait_ready(&mut self) -> Result<()> {
        let quick = agent(Duration::from_secs(2));
        let url = format!("{}/status", self.base);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "chromedriver exited ({status}) before it was ready:\n{}",
                    log_tail(&self.log)
                ));
            }
            if let Ok(response) = quick.get(&url).call() {
                if let Ok((200, body)) = read_body(response) {
                    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    if v["value"]["ready"] == json!(true) {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "chromedriver not ready at {url} after {WAIT:?}:\n{}",
                    log_tail(&self.log)
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// One WebDriver request; the answer's `value`, or the W3C error it carries.
    fn request(&self, method: &str, url: &str, body: Option<Value>) -> Result<Value> {
        let sent = match (method, body) {
            ("GET", _) => self.http.get(url).call(),
            ("DELETE", _) => self.http.delete(url).call(),
            (_, body) => self
                .http
                .post(url)
                .send_json(body.unwrap_or_else(|| json!({}))),
        };
        let response = sent.map_err(|e| format!("{method} {url}: {e}"))?;
        let (status, text) = read_body(response).map_err(|e| format!("{method} {url}: {e}"))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{method} {url}: HTTP {status}, not JSON ({e}): {text}"))?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if status >= 400 || value.get("error").is_some_and(|e| !e.is_null()) {
            let short = |s: &str| s.chars().take(600).collect::<String>();
            return Err(format!(
                "{method} {url}: HTTP {status}: {}: {}",
                value["error"].as_str().unwrap_or("error"),
                short(value["message"].as_str().unwrap_or(&text))
            ));
        }
        Ok(value)
    }

    /// A request on the session: `path` is relative to `/session/{id}`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let session = self.session.as_deref().ok_or("no WebDriver session")?;
        self.request(
            method,
            &format!("{}/session/{session}{path}", self.base),
            body,
        )
    }

    fn navigate(&self, url: &str) -> Result<()> {
        self.call("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    fn find(&self, css: &str) -> Result<String> {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        element_id(&v).ok_or_else(|| format!("find {css}: no element reference in {v}"))
    }

    fn find_all(&self, css: &str) -> Result<Vec<String>> {
        let v = self.call(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        Ok(v.as_array()
            .map(|a| a.iter().filter_map(element_id).collect())
            .unwrap_or_default())
    }

    fn click(&self, element: &str) -> Result<()> {
        self.call(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .map(drop)
    }

    fn clear(&self, element: &str) -> Result<()> {
        self.call(
            "POST",
            &format!("/element/{element}/clear"),
            Some(json!({})),
        )
        .map(drop)
    }

    fn send_keys(&self, element: &str, text: &str) -> Result<()> {
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .map(drop)
    }

    fn text(&self, element: &str) -> Result<String> {
        let v = self.call("GET", &format!("/element/{element}/text"), None)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    fn execute(&self, script: &str, args: Value) -> Result<Value> {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    fn screenshot(&self) -> Result<Vec<u8>> {
        let v = self.call("GET", "/screenshot", None)?;
        let b64 = v.as_str().ok_or("screenshot: not a string")?;
        base64_decode(b64).ok_or_else(|| "screenshot: not base64".to_string())
    }

    /// Polls `check` until it gives a value, at most [`WAIT`]; an error from it ends the wait.
    fn wait_until<T>(&self, what: &str, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = check()? {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                return Err(format!("timed out after {WAIT:?} waiting for {what}"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// What the page looks like, for a failure message.
    fn diagnostics(&self) -> String {
        let script = "const t = (id) => { const e = document.getElementById(id);
                          return e ? e.innerText.slice(0, 1500) : '(missing)'; };
                      return 'url: ' + location.href + '\\nstate: ' + document.body.dataset.state
                          + '\\nusers: ' + document.body.dataset.users
                          + '\\nerror: ' + t('error') + '\\n#plain:\\n' + t('plain')
                          + '\\n#personal:\\n' + t('personal');";
        match self.execute(script, json!([])) {
            Ok(v) => v.as_str().unwrap_or_default().to_string(),
            Err(e) => format!("(could not read the page: {e})"),
        }
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let url = format!("{}/session/{session}", self.base);
            if let Err(e) = agent(Duration::from_secs(10)).delete(&url).call() {
                eprintln!("browser test: could not delete the WebDriver session: {e}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- chromedriver log ---\n{}", log_tail(&self.log));
        }
    }
}

/// What may starve a browser's start-up: the load, the free space where its profile lives, and
/// the servers still running (a test that left Qdrant nodes or an aisle server behind).
fn machine_state(dir: &Path) -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let df = Command::new("df")
        .arg("-h")
        .arg(dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut running: std::collections::BTreeMap<String, usize> = Default::default();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            if let Ok(comm) = std::fs::read_to_string(p.path().join("comm")) {
                let comm = comm.trim();
                if ["qdrant", "aisle", "chrom"]
                    .iter()
                    .any(|n| comm.starts_with(n))
                {
                    *running.entry(comm.to_string()).or_default() += 1;
                }
            }
        }
    }
    format!(
        "--- machine ---\nload average: {}\n{}processes: {running:?}",
        load.trim(),
        df
    )
}

fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Standard base64 (with or without padding, whitespace ignored), as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            break;
        }
        acc = (acc << 6) | sextet(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
