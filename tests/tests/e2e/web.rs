//! The review web page in a real headless Chromium, driven over W3C WebDriver.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`/usr/bin/chromedriver`); CI installs
//! them, and the test fails loudly when they are missing rather than skipping.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pinfold_e2e::{
    RegistryProcess, Scratch, bin, example, free_port, keygen, ok_stdout, publish, run,
};
use pinfold_test_support::copy_tree;
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The W3C key under which a found element's reference comes back.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one headless browser session; both end when dropped.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

impl Browser {
    /// Starts chromedriver and a headless session; the browser's profile and temporary
    /// files live under `tmp` (removed with the test's scratch directory).
    fn start(tmp: &Path) -> Browser {
        for p in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(p).exists(),
                "{p} is missing: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
            );
        }
        let port = free_port();
        std::fs::create_dir_all(tmp).unwrap();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .env("TMPDIR", tmp)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut r) = agent.get(format!("{base}/status")).call()
                && r.body_mut()
                    .read_json::<Value>()
                    .is_ok_and(|v| v["value"]["ready"] == true)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            agent,
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900",
                         format!("--user-data-dir={}", tmp.join("profile").display())]
            }
        }}});
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    /// A WebDriver command; returns its `value`, panicking on a WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let resp = match method {
            "POST" => self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body.unwrap_or(json!({})).to_string()),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self.agent.get(&url).call(),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let v: Value = resp.body_mut().read_json().unwrap();
        assert!(status < 300, "{method} {path}: {status} {v}");
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.call(
            "POST",
            &format!("/session/{}/url", self.session),
            Some(json!({"url": url})),
        );
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &format!("/session/{}/element", self.session),
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css:?}: {v}"))
            .to_string()
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.call(
            "GET",
            &format!("/session/{}/element/{e}/text", self.session),
            None,
        )
        .as_str()
        .unwrap()
        .to_string()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &format!("/session/{}/element/{e}/click", self.session),
            None,
        );
    }

    /// Runs `script` (a function body) in the page through WebDriver, which is not a page
    /// script: the page's CSP forbids those, and the page has none.
    fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The page's HTML source.
    fn source(&self) -> String {
        self.call("GET", &format!("/session/{}/source", self.session), None)
            .as_str()
            .unwrap()
            .to_string()
    }

    fn title(&self) -> String {
        self.call("GET", &format!("/session/{}/title", self.session), None)
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_review_page_in_a_headless_browser_shows_queue_imports_and_diff() {
    pinfold_test_support::heavy!("chromium and chromedriver");
    let s = Scratch::new();
    let (author, _) = keygen(&s, "author");
    let (k1, p1) = keygen(&s, "r1");
    let server = RegistryProcess::start(&s.path("registry"), &["--reviewer", &p1]);
    let url = server.url.clone();

    // Version 1.0.0 approved; 1.1.0 (one changed argument default) pending.
    let v1 = ok_stdout(&run(
        "task-defs",
        &[
            &"publish",
            &example("wordfreq"),
            &"--registry",
            &url,
            &"--key",
            &author,
            &"--json",
        ],
    ));
    let v1: Value = serde_json::from_str(&v1).unwrap();
    let v1_id = v1["id"].as_str().unwrap().to_string();
    let o = Command::new(bin("task-defs"))
        .args(["review", "approve", &v1_id, "--registry", &url, "--key"])
        .arg(&k1)
        .output()
        .unwrap();
    ok_stdout(&o);
    let v2_dir = s.path("wordfreq-1.1");
    copy_tree(&example("wordfreq"), &v2_dir);
    let manifest = std::fs::read_to_string(v2_dir.join("taskdef.toml"))
        .unwrap()
        .replace("version = \"1.0.0\"", "version = \"1.1.0\"")
        .replace("default = 20", "default = 25");
    std::fs::write(v2_dir.join("taskdef.toml"), manifest).unwrap();
    let v2 = ok_stdout(&run(
        "task-defs",
        &[
            &"publish",
            &v2_dir,
            &"--registry",
            &url,
            &"--key",
            &author,
            &"--json",
        ],
    ));
    let v2: Value = serde_json::from_str(&v2).unwrap();
    let v2_id = v2["id"].as_str().unwrap().to_string();

    let b = Browser::start(&s.path("browser"));
    b.goto(&format!("{url}/"));
    assert!(b.title().contains("Review queue"), "{}", b.title());
    let queue = b.text("#queue");
    assert!(
        queue.contains("wordfreq") && queue.contains("1.1.0"),
        "{queue}"
    );
    assert!(
        !queue.contains("1.0.0"),
        "the approved version is not queued: {queue}"
    );

    b.click("#queue a");
    assert!(b.title().contains("wordfreq 1.1.0"), "{}", b.title());
    let imports = b.text("#imports");
    assert!(
        imports.contains("wasi_snapshot_preview1::fd_write"),
        "{imports}"
    );
    assert!(
        imports.contains("stdio") || imports.contains("filesystem"),
        "{imports}"
    );
    let diff = b.text("table.diff");
    assert!(diff.contains("-version = \"1.0.0\""), "{diff}");
    assert!(diff.contains("+version = \"1.1.0\""), "{diff}");
    assert!(diff.contains("+default = 25"), "{diff}");
    let cmd = b.text("#approve-cmd");
    assert!(
        cmd.contains(&format!(
            "task-defs review approve {v2_id} --registry {url} --key <YOUR_KEY>"
        )),
        "{cmd}"
    );
    let body = b.text("body");
    assert!(body.contains(&v1_id), "links the previous approved version");
    assert!(body.contains("verifies"), "inclusion proof status");
}

fn verdict(url: &str, verb: &str, id: &str, key: &Path, reason: &str) {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"review", &verb, &id, &"--registry", &url, &"--key", &key];
    if !reason.is_empty() {
        args.extend([&"--reason" as &dyn AsRef<std::ffi::OsStr>, &reason]);
    }
    ok_stdout(&run("task-defs", &args));
}

#[test]
fn the_review_page_shows_what_a_reviewer_must_judge() {
    pinfold_test_support::heavy!("chromium and chromedriver");
    let s = Scratch::new();
    let (author, author_pub) = keygen(&s, "author");
    let (newcomer, newcomer_pub) = keygen(&s, "newcomer");
    let (k1, p1) = keygen(&s, "r1");
    let server = RegistryProcess::start(
        &s.path("registry"),
        &[
            "--reviewer",
            &format!("ann={p1}"),
            "--public-url",
            "https://registry.example.org",
        ],
    );
    let url = server.url.clone();
    let public = "https://registry.example.org";

    let v1_id = publish(&url, &example("wordfreq"), &author);
    verdict(&url, "approve", &v1_id, &k1, "");

    // 1.1.0, by another key: a new module with another import, and a source comment
    // hiding a right-to-left override.
    let v2 = s.path("wordfreq-1.1");
    copy_tree(&example("wordfreq"), &v2);
    let manifest = std::fs::read_to_string(v2.join("taskdef.toml"))
        .unwrap()
        .replace("version = \"1.0.0\"", "version = \"1.1.0\"");
    std::fs::write(v2.join("taskdef.toml"), manifest).unwrap();
    let module = wat::parse_str(
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
             (import "wasi_snapshot_preview1" "random_get" (func (param i32 i32) (result i32)))
             (memory (export "memory") 1)
             (func (export "_start")))"#,
    )
    .unwrap();
    std::fs::write(v2.join("wordfreq.wasm"), &module).unwrap();
    let c_path = v2.join("src/wordfreq.c");
    let c = std::fs::read_to_string(&c_path).unwrap();
    std::fs::write(
        &c_path,
        format!("/* admin check \u{202E} }} \u{2066}*/\n{c}"),
    )
    .unwrap();
    let v2_id = publish(&url, &v2, &newcomer);
    verdict(&url, "reject", &v2_id, &k1, "new key, new import: explain");

    let b = Browser::start(&s.path("browser"));
    b.goto(&format!("{url}/definitions/{v2_id}"));
    assert!(b.title().contains("wordfreq 1.1.0"), "{}", b.title());

    // Status and statements at the top, each with its signed time.
    let summary = b.text("#status-summary");
    assert!(
        summary.contains("rejected") && summary.contains("0 of 1 approvals"),
        "{summary}"
    );
    let statements = b.text("#statement-list");
    assert!(
        statements.contains("ann")
            && statements.contains("reject")
            && statements.contains("new key, new import: explain")
            && statements.contains(" UTC"),
        "{statements}"
    );
    let top = |css: &str| {
        b.script(&format!(
            "return document.querySelector('{css}').getBoundingClientRect().top + window.scrollY;"
        ))
        .as_f64()
        .unwrap()
    };
    assert!(
        top("#statement-list") < top("#diff"),
        "statements before the diff"
    );
    assert!(top("#status-summary") < top("#statement-list"));

    // The author key changed, said at the top and in the diff.
    assert!(
        b.text("#author-changed-top")
            .contains("The author key changed")
    );
    let changed = b.text("#author-changed");
    assert!(
        changed.contains(&author_pub) && changed.contains(&newcomer_pub),
        "{changed}"
    );

    // Imports and capabilities, old -> new.
    let caps = b.text("#capabilities");
    assert!(
        caps.contains("+import wasi_snapshot_preview1::random_get (func, random)")
            && caps.contains("+capability random"),
        "{caps}"
    );
    assert!(
        caps.contains("-import wasi_snapshot_preview1::path_open"),
        "{caps}"
    );

    // The module digests old -> new, never only "Binary file".
    let old_digest =
        blake3::hash(&std::fs::read(example("wordfreq").join("wordfreq.wasm")).unwrap())
            .to_hex()
            .to_string();
    let new_digest = blake3::hash(&module).to_hex().to_string();
    let code = b.text("#code-change");
    assert!(
        code.contains(&old_digest) && code.contains(&new_digest) && code.contains("changed"),
        "{code}"
    );
    let body = b.text("body");
    assert!(
        body.contains(&format!("wordfreq.wasm modified\nblake3:{old_digest}")),
        "a binary change shows its digests"
    );
    assert!(body.contains(&format!("→ blake3:{new_digest} ({} bytes)", module.len())));

    // Trojan Source: a banner naming the character and its place; the character marked.
    let warning = b.text("#unicode-warning");
    assert!(
        warning.contains("src/wordfreq.c:1:16 U+202E RIGHT-TO-LEFT OVERRIDE")
            && warning.contains("U+2066 LEFT-TO-RIGHT ISOLATE"),
        "{warning}"
    );
    let marked = b.script(
        "return Array.from(document.querySelectorAll('mark.uni')).map(m => m.title).join('|');",
    );
    assert!(
        marked
            .as_str()
            .unwrap()
            .contains("U+202E RIGHT-TO-LEFT OVERRIDE"),
        "{marked}"
    );
    assert!(
        !b.source().contains('\u{202E}'),
        "the raw override never reaches the page"
    );

    // A unified diff: hunk headers with counts, removal before addition.
    let diff = b.text("#diff");
    let header = diff
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with("@@ -"))
        .unwrap_or_else(|| panic!("no hunk header: {diff}"));
    let counts: Vec<&str> = header.split(' ').collect();
    assert!(
        counts.len() >= 4
            && counts[1].contains(',')
            && counts[2].contains(',')
            && counts[3] == "@@",
        "{header}"
    );
    let del = diff.find("-version = \"1.0.0\"").expect("removed line");
    let add = diff.find("+version = \"1.1.0\"").expect("added line");
    assert!(del < add, "- before +");

    // The approve command names the configured URL and is not cut at 1,280 px.
    let cmd = b.text("#approve-cmd");
    assert!(
        cmd.contains(&format!(
            "task-defs review approve {v2_id} --registry {public} --key <YOUR_KEY>"
        )),
        "{cmd}"
    );
    let width = b.script("return window.innerWidth;").as_f64().unwrap();
    assert!((1200.0..=1280.0).contains(&width), "window {width} px wide");
    let fits = b.script(
        "const e = document.getElementById('approve-cmd'); return [e.scrollWidth, e.clientWidth];",
    );
    let (scroll, client) = (fits[0].as_f64().unwrap(), fits[1].as_f64().unwrap());
    assert!(
        scroll <= client,
        "approve command cut: scrollWidth {scroll} > clientWidth {client}"
    );

    // Line numbers and anchors in the source view.
    b.goto(&format!("{url}/definitions/{v2_id}#src-2-L1"));
    let line = b.text("#src-2-L1");
    assert!(
        line.starts_with('1') && line.contains("admin check"),
        "{line}"
    );
    let linked = b.script("return document.querySelector('#src-2-L1 a').getAttribute('href');");
    assert_eq!(linked, "#src-2-L1");
    assert!(!b.source().contains("<script"), "no scripts");
}
