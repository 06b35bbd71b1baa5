//! The one layout of every page, and the formats pages share.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use rust_decimal::Decimal;

use super::ASSET_VERSION;

/// A whole page: `scripts` are recur's own (`/assets/...`), loaded deferred.
pub fn layout(title: &str, main: Markup, scripts: &[&str]) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex, nofollow";
                // No favicon request: every request a page makes is one recur answers.
                link rel="icon" href="data:,";
                title { (title) }
                link rel="stylesheet" href={ "/assets/recur.css?v=" (ASSET_VERSION) };
                @for s in scripts {
                    script src={ (s) "?v=" (ASSET_VERSION) } defer {}
                }
            }
            body {
                main id="main" { (main) }
                footer { p { "Payments processed by recur" } }
            }
        }
    }
}

/// A page of the dashboard or the console: a wider main column under a header with
/// the site's navigation (`nav`), and a link that skips to the content.
pub fn app_layout(title: &str, nav: Markup, main: Markup, scripts: &[&str]) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex, nofollow";
                link rel="icon" href="data:,";
                title { (title) }
                link rel="stylesheet" href={ "/assets/recur.css?v=" (ASSET_VERSION) };
                @for s in scripts {
                    script src={ (s) "?v=" (ASSET_VERSION) } defer {}
                }
            }
            body class="app" {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" { (nav) }
                main id="main" class="wide" { (main) }
            }
        }
    }
}

/// An amount in its currency's format: the currency's minor units, its symbol when
/// it has a well-known one ("€9.99", "¥1200", "9.990 KWD").
pub fn format_money(amount: Decimal, currency: &str) -> String {
    let number = crate::money::format_amount(amount, currency);
    match currency {
        "EUR" => format!("€{number}"),
        "USD" => format!("${number}"),
        "GBP" => format!("£{number}"),
        "JPY" => format!("¥{number}"),
        _ => format!("{number} {currency}"),
    }
}

/// `<meta http-equiv="refresh">` inside `<noscript>`: the page refreshes itself when
/// JavaScript is off (with it, the script polls).
pub fn refresh_without_js(seconds: u32) -> Markup {
    html! { noscript { (PreEscaped(format!(r#"<meta http-equiv="refresh" content="{seconds}">"#))) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_has_the_currencys_minor_units() {
        assert_eq!(format_money(Decimal::new(999, 2), "EUR"), "€9.99");
        assert_eq!(format_money(Decimal::new(1200, 0), "JPY"), "¥1200");
        assert_eq!(format_money(Decimal::new(9990, 3), "KWD"), "9.990 KWD");
    }

    #[test]
    fn text_is_escaped() {
        let page = layout("<script>", html! { p { "<b>" } }, &[]).into_string();
        assert!(page.contains("&lt;script&gt;") && !page.contains("<b>"), "{page}");
    }
}
