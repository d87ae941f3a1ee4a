//! HTML → plain text for the operator console.
//!
//! Mail HTML is hostile input (scripts, tracking pixels, forms that imitate
//! the city's login page), so the console never renders it. This turns it
//! into text: tags are dropped, `script`/`style`/`head` and similar
//! elements are dropped with their content, block elements become line
//! breaks, entities are decoded and whitespace is collapsed as a browser
//! would. The result contains no markup *that will be interpreted*: a
//! literal `<` from `&lt;` stays a character, and the console escapes text
//! as it does for any chat line.

/// Elements whose content is not text for a reader.
const SKIP_CONTENT: &[&str] = &[
    "script", "style", "head", "title", "template", "noscript", "iframe", "object", "svg", "math",
];

/// Elements that start a new line.
const BLOCK: &[&str] = &[
    "p",
    "div",
    "br",
    "tr",
    "table",
    "ul",
    "ol",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "hr",
    "section",
    "article",
    "header",
    "footer",
    "pre",
    "address",
    "dl",
    "dt",
    "dd",
    "form",
    "fieldset",
    "center",
];

pub fn html_to_safe_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    let mut pending_space = false;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('<') {
            if let Some(comment) = after.strip_prefix("!--") {
                rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
                continue;
            }
            let (name, closing, tag_end) = read_tag(after);
            let Some(tag_end) = tag_end else {
                // An unterminated tag: the rest is not text.
                break;
            };
            rest = &after[tag_end..];
            if !closing && SKIP_CONTENT.contains(&name.as_str()) {
                rest = skip_element(rest, &name);
                continue;
            }
            if name == "li" && !closing {
                newline(&mut out);
                out.push_str("- ");
                pending_space = false;
            } else if BLOCK.contains(&name.as_str()) {
                newline(&mut out);
                if matches!(name.as_str(), "p" | "div" | "table" | "blockquote") && closing {
                    newline(&mut out);
                }
                pending_space = false;
            } else if matches!(name.as_str(), "td" | "th") && closing {
                pending_space = true;
            }
            continue;
        }
        let mut chars = rest.chars();
        let Some(c) = chars.next() else { break };
        if c == '&' {
            let (decoded, used) = entity(rest);
            push_char(&mut out, decoded, &mut pending_space);
            rest = &rest[used..];
            continue;
        }
        rest = chars.as_str();
        if c.is_whitespace() {
            pending_space = true;
        } else if !c.is_control() {
            push_char(&mut out, c, &mut pending_space);
        }
    }
    // At most one empty line in a row, no trailing spaces.
    let mut text = String::with_capacity(out.len());
    let mut blank = 0;
    for line in out.lines().map(str::trim_end) {
        if line.trim().is_empty() {
            blank += 1;
            if blank > 1 || text.is_empty() {
                continue;
            }
        } else {
            blank = 0;
        }
        text.push_str(line);
        text.push('\n');
    }
    text.trim_end().to_owned()
}

fn push_char(out: &mut String, c: char, pending_space: &mut bool) {
    if *pending_space && !out.is_empty() && !out.ends_with(['\n', ' ']) {
        out.push(' ');
    }
    *pending_space = false;
    out.push(c);
}

fn newline(out: &mut String) {
    while out.ends_with(' ') {
        out.pop();
    }
    out.push('\n');
}

/// Reads a tag after its `<`: the lower-case name, whether it is a closing
/// tag, and where it ends (after `>`), respecting quoted attribute values.
fn read_tag(s: &str) -> (String, bool, Option<usize>) {
    let closing = s.starts_with('/');
    let body = s.trim_start_matches('/');
    let name: String = body
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase();
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return (name, closing, Some(i + 1)),
            _ => {}
        }
    }
    (name, closing, None)
}

/// Skips to after `</name ...>`, or to the end when it is never closed.
fn skip_element<'a>(s: &'a str, name: &str) -> &'a str {
    let lower = s.to_ascii_lowercase();
    let close = format!("</{name}");
    let Some(at) = lower.find(&close) else {
        return "";
    };
    let after = &s[at..];
    after.find('>').map_or("", |end| &after[end + 1..])
}

/// Decodes the entity at the start of `s` (which begins with '&'); returns
/// the character and the bytes used. Not an entity: '&' itself.
fn entity(s: &str) -> (char, usize) {
    let Some(end) = s.get(1..).and_then(|t| t.find(';')).filter(|&e| e <= 32) else {
        return ('&', 1);
    };
    let name = &s[1..=end];
    let decoded = if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => num.parse::<u32>().ok(),
        };
        code.map(|c| match c {
            0 => char::REPLACEMENT_CHARACTER,
            _ => char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER),
        })
    } else {
        named_entity(name)
    };
    match decoded {
        Some(c) => (c, end + 2),
        None => ('&', 1),
    }
}

fn named_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "agrave" => 'à',
        "aacute" => 'á',
        "egrave" => 'è',
        "eacute" => 'é',
        "igrave" => 'ì',
        "iacute" => 'í',
        "ograve" => 'ò',
        "oacute" => 'ó',
        "ugrave" => 'ù',
        "uacute" => 'ú',
        "Agrave" => 'À',
        "Egrave" => 'È',
        "Eacute" => 'É',
        "Igrave" => 'Ì',
        "Ograve" => 'Ò',
        "Ugrave" => 'Ù',
        "ccedil" => 'ç',
        "euro" => '€',
        "laquo" => '«',
        "raquo" => '»',
        "hellip" => '…',
        "ndash" => '–',
        "mdash" => '—',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "copy" => '©',
        "reg" => '®',
        "deg" => '°',
        "middot" => '·',
        "bull" => '•',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_styles_and_tags_go_and_entities_are_decoded() {
        let html = r#"<html><head><title>T</title><style>p{color:red}</style></head>
            <body><script type="text/javascript">alert("x<b>")</script>
            <p>Buongiorno,&nbsp;vorrei <b>informazioni</b> sulla TARI &egrave; &#8364;&#x20AC; &lt;script&gt;</p>
            <div>Grazie<br>Mario</div><!-- <script>nope</script> --><img src="http://t/p.gif" onerror="x()">
            <a href="javascript:evil()" title='a > b'>link</a></body></html>"#;
        let text = html_to_safe_text(html);
        assert_eq!(
            text,
            "Buongiorno, vorrei informazioni sulla TARI è €€ <script>\n\nGrazie\nMario\n\nlink"
        );
    }

    #[test]
    fn lists_and_unterminated_markup() {
        assert_eq!(html_to_safe_text("<ul><li>uno<li>due</ul>"), "- uno\n- due");
        assert_eq!(html_to_safe_text("testo <script>alert(1)"), "testo");
        assert_eq!(html_to_safe_text("a <b"), "a");
        assert_eq!(
            html_to_safe_text("&unknown; & &#xD800; &#0;"),
            "&unknown; & \u{FFFD} \u{FFFD}"
        );
    }
}
