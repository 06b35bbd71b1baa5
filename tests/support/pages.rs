//! A browser's part, as far as the server can tell: the pages' cookie and CSRF field
//! carried from a GET to the POST that follows it, redirects not followed (tests look
//! at each hop). Real browsers drive the pages in `tests/browser/`.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::TestApp;

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub html: String,
}

impl Page {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The value of the form's hidden `csrf` field.
    pub fn csrf(&self) -> String {
        let at = self.html.find(r#"name="csrf" value=""#).unwrap_or_else(|| panic!("no csrf field in {}", self.html));
        let rest = &self.html[at + r#"name="csrf" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    /// The `recur_csrf` cookie this page set, as a `Cookie` header value.
    pub fn cookie(&self) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("recur_csrf="))
            .map(|c| c.split(';').next().unwrap().to_owned())
    }
}

/// The path of a page URL the API handed out (`http://host/checkout/<token>`).
pub fn path_of(url: &str) -> String {
    let u = url::Url::parse(url).expect("a page URL");
    u.path().to_owned()
}

impl TestApp {
    fn browser(&self) -> reqwest::Client {
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
    }

    async fn page_of(res: reqwest::Response) -> Page {
        let status = res.status();
        let headers = res.headers().clone();
        let html = res.text().await.unwrap_or_default();
        Page { status, headers, html }
    }

    /// GET a page as a browser would (`cookie`: the browser's cookie, if any).
    pub async fn page(&self, path: &str, cookie: Option<&str>) -> Page {
        let mut rb = self.browser().get(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            rb = rb.header("cookie", c);
        }
        Self::page_of(rb.send().await.expect("page answered")).await
    }

    /// POST a page's form: `fields` urlencoded, sent as from the page itself.
    pub async fn submit(&self, path: &str, cookie: Option<&str>, fields: &[(&str, &str)]) -> Page {
        let mut rb = self.browser().post(format!("{}{path}", self.base)).form(fields);
        if let Some(c) = cookie {
            rb = rb.header("cookie", c);
        }
        Self::page_of(rb.send().await.expect("form answered")).await
    }

    /// Open a checkout page and submit a card on it, as a customer would: the page's
    /// cookie and CSRF field go with the card.
    pub async fn pay(&self, path: &str, number: &str, expiry: &str, cvc: &str) -> Page {
        let form = self.page(path, None).await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.html);
        let cookie = form.cookie().expect("the page sets its cookie");
        let csrf = form.csrf();
        self.submit(
            path,
            Some(&cookie),
            &[("csrf", &csrf), ("name", "Ada Lovelace"), ("number", number), ("expiry", expiry), ("cvc", cvc)],
        )
        .await
    }
}
