//! The RFC 7644 §3.4.2.2 filter grammar: a hand-written recursive-descent parser (so every
//! rejection says where and why, as `invalidFilter`), and an in-memory evaluator used for
//! PATCH value-selection filters. The ingress compiles the same AST to SQL for list queries.

use serde_json::Value;

use crate::error::ScimError;

/// Longest filter accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;
/// Deepest nesting of parentheses, `not` and value paths.
pub const MAX_FILTER_DEPTH: usize = 16;
/// Most comparisons (leaves) in one filter.
pub const MAX_FILTER_TERMS: usize = 64;

/// An attribute path: `[urn:]attr[.sub]`, names as written by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    /// Schema URN prefix, when the path was fully qualified.
    pub urn: Option<String>,
    /// Top-level attribute name.
    pub attr: String,
    /// Sub-attribute name.
    pub sub: Option<String>,
}

impl AttrPath {
    /// Parses `urn:…:attr.sub`, `attr.sub` or `attr`.
    pub fn parse(text: &str) -> Result<AttrPath, String> {
        let text = text.trim();
        let (urn, rest) = if text.len() > 4 && text[..4].eq_ignore_ascii_case("urn:") {
            // The attribute follows the URN's last colon; the URN itself contains dots ("2.0").
            match text.rfind(':') {
                Some(i) => (Some(text[..i].to_string()), &text[i + 1..]),
                None => (None, text),
            }
        } else {
            (None, text)
        };
        let (attr, sub) = match rest.split_once('.') {
            Some((a, s)) => (a, Some(s)),
            None => (rest, None),
        };
        let valid =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$');
        if !valid(attr) || sub.is_some_and(|s| !valid(s)) {
            return Err(format!("'{text}' is not a valid attribute path"));
        }
        Ok(AttrPath { urn, attr: attr.to_string(), sub: sub.map(str::to_string) })
    }
}

impl std::fmt::Display for AttrPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        write!(f, "{}", self.attr)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    fn parse(word: &str) -> Option<CompareOp> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            _ => return None,
        })
    }
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `path op value`
    Compare(AttrPath, CompareOp, Value),
    /// `path pr`
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `path[filter]`: some element of the multi-valued `path` matches the inner filter, whose
    /// paths are relative to the element. `path[f].sub op v` parses as `path[f and sub op v]`.
    ValuePath(AttrPath, Box<Filter>),
}

impl Filter {
    /// Parses a filter with the limits above.
    pub fn parse(text: &str) -> Result<Filter, ScimError> {
        if text.len() > MAX_FILTER_LEN {
            return Err(ScimError::invalid_filter(format!("filter is longer than {MAX_FILTER_LEN} characters")));
        }
        let tokens = tokenize(text).map_err(ScimError::invalid_filter)?;
        let mut parser = Parser { tokens, pos: 0, terms: 0 };
        let filter = parser.or(0).map_err(ScimError::invalid_filter)?;
        if let Some(tok) = parser.tokens.get(parser.pos) {
            return Err(ScimError::invalid_filter(format!("unexpected {} after the filter", tok.describe())));
        }
        Ok(filter)
    }

    /// The `(sub-attribute, value)` pairs that an equality-only filter pins down, so that a
    /// PATCH `add` to `emails[type eq "work"].value` can create the element it names.
    pub fn equalities(&self) -> Option<Vec<(String, Value)>> {
        match self {
            Filter::Compare(p, CompareOp::Eq, v) if p.urn.is_none() && p.sub.is_none() => {
                Some(vec![(p.attr.clone(), v.clone())])
            }
            Filter::And(a, b) => {
                let mut out = a.equalities()?;
                out.extend(b.equalities()?);
                Some(out)
            }
            _ => None,
        }
    }

    /// Evaluates the filter against one JSON object (an element of a multi-valued attribute,
    /// or a resource). `case_exact` tells, per path, whether string comparison is exact.
    pub fn matches(&self, doc: &Value, case_exact: &dyn Fn(&AttrPath) -> bool) -> bool {
        match self {
            Filter::And(a, b) => a.matches(doc, case_exact) && b.matches(doc, case_exact),
            Filter::Or(a, b) => a.matches(doc, case_exact) || b.matches(doc, case_exact),
            Filter::Not(f) => !f.matches(doc, case_exact),
            Filter::Present(p) => values_at(doc, p).iter().any(|v| is_present(v)),
            Filter::Compare(p, op, expected) => {
                let exact = case_exact(p);
                let found = values_at(doc, p);
                if *op == CompareOp::Ne {
                    return !found.iter().any(|v| compare(v, CompareOp::Eq, expected, exact));
                }
                found.iter().any(|v| compare(v, *op, expected, exact))
            }
            Filter::ValuePath(p, inner) => elements_at(doc, p).iter().any(|el| inner.matches(el, case_exact)),
        }
    }
}

fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

fn get_ci<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    obj.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

/// The values of the path's top-level attribute, one per element for multi-valued ones.
fn elements_at<'a>(doc: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let base = match &path.urn {
        Some(urn) => match get_ci(doc, urn) {
            Some(ext) => ext,
            None => return Vec::new(),
        },
        None => doc,
    };
    match get_ci(base, &path.attr) {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(other) => vec![other],
        None => Vec::new(),
    }
}

/// Every value the path reaches in `doc`; a complex value without a named sub-attribute
/// stands for its `value` sub-attribute (RFC 7644 §3.4.2.2, `emails co "x"`).
fn values_at<'a>(doc: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let tops = elements_at(doc, path);
    match &path.sub {
        None => tops.into_iter().map(|v| if v.is_object() { get_ci(v, "value").unwrap_or(v) } else { v }).collect(),
        Some(sub) => tops.into_iter().filter_map(|v| get_ci(v, sub)).collect(),
    }
}

fn compare(actual: &Value, op: CompareOp, expected: &Value, case_exact: bool) -> bool {
    use std::cmp::Ordering;
    let ordering: Option<Ordering> = match (actual, expected) {
        (Value::String(a), Value::String(e)) => {
            let (a, e) = if case_exact { (a.clone(), e.clone()) } else { (a.to_lowercase(), e.to_lowercase()) };
            match op {
                CompareOp::Co => return a.contains(&e),
                CompareOp::Sw => return a.starts_with(&e),
                CompareOp::Ew => return a.ends_with(&e),
                _ => Some(a.cmp(&e)),
            }
        }
        (Value::Number(a), Value::Number(e)) => a.as_f64().zip(e.as_f64()).and_then(|(a, e)| a.partial_cmp(&e)),
        (Value::Bool(a), Value::Bool(e)) => {
            return match op {
                CompareOp::Eq => a == e,
                CompareOp::Ne => a != e,
                _ => false,
            };
        }
        (a, Value::Null) => return matches!(op, CompareOp::Eq) && a.is_null(),
        _ => None,
    };
    let Some(ord) = ordering else { return false };
    match op {
        CompareOp::Eq => ord == Ordering::Equal,
        CompareOp::Ne => ord != Ordering::Equal,
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    Word(String),
    Str(String),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Open => "'('".into(),
            Token::Close => "')'".into(),
            Token::OpenBracket => "'['".into(),
            Token::CloseBracket => "']'".into(),
            Token::Word(w) => format!("'{w}'"),
            Token::Str(s) => format!("\"{s}\""),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            '[' => {
                tokens.push(Token::OpenBracket);
                i += 1;
            }
            ']' => {
                tokens.push(Token::CloseBracket);
                i += 1;
            }
            '"' => {
                // A JSON string literal, escapes included (RFC 7644: compValue is a JSON value).
                let start = i;
                i += 1;
                let mut escaped = false;
                while i < chars.len() && (escaped || chars[i] != '"') {
                    escaped = !escaped && chars[i] == '\\';
                    i += 1;
                }
                if i >= chars.len() {
                    return Err("unterminated string literal".into());
                }
                i += 1;
                let literal: String = chars[start..i].iter().collect();
                let value: String =
                    serde_json::from_str(&literal).map_err(|_| format!("invalid string literal {literal}"))?;
                tokens.push(Token::Str(value));
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !"()[]\"".contains(chars[i]) {
                    i += 1;
                }
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    terms: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn or(&mut self, depth: usize) -> Result<Filter, String> {
        let mut left = self.and(depth)?;
        while self.peek_keyword("or") {
            self.pos += 1;
            let right = self.and(depth)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Filter, String> {
        let mut left = self.unary(depth)?;
        while self.peek_keyword("and") {
            self.pos += 1;
            let right = self.unary(depth)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Filter, String> {
        if depth >= MAX_FILTER_DEPTH {
            return Err(format!("filter is nested deeper than {MAX_FILTER_DEPTH} levels"));
        }
        if self.peek_keyword("not") {
            self.pos += 1;
            return Ok(Filter::Not(Box::new(self.unary(depth + 1)?)));
        }
        match self.next() {
            Some(Token::Open) => {
                let inner = self.or(depth + 1)?;
                match self.next() {
                    Some(Token::Close) => Ok(inner),
                    Some(t) => Err(format!("expected ')' but found {}", t.describe())),
                    None => Err("missing ')'".into()),
                }
            }
            Some(Token::Word(word)) => self.attr_expr(&word, depth),
            Some(t) => Err(format!("expected an attribute path but found {}", t.describe())),
            None => Err("filter ends where an expression was expected".into()),
        }
    }

    fn attr_expr(&mut self, word: &str, depth: usize) -> Result<Filter, String> {
        let path = AttrPath::parse(word)?;
        if self.peek() == Some(&Token::OpenBracket) {
            self.pos += 1;
            if path.sub.is_some() {
                return Err(format!("'{word}' cannot take a value filter"));
            }
            let inner = self.or(depth + 1)?;
            match self.next() {
                Some(Token::CloseBracket) => {}
                Some(t) => return Err(format!("expected ']' but found {}", t.describe())),
                None => return Err("missing ']'".into()),
            }
            let inner = match self.peek() {
                Some(Token::Word(w)) if w.starts_with('.') => {
                    let sub = w[1..].to_string();
                    self.pos += 1;
                    let sub_path = AttrPath::parse(&sub)?;
                    let cond = self.condition(sub_path)?;
                    Filter::And(Box::new(inner), Box::new(cond))
                }
                _ => inner,
            };
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        self.condition(path)
    }

    fn condition(&mut self, path: AttrPath) -> Result<Filter, String> {
        self.terms += 1;
        if self.terms > MAX_FILTER_TERMS {
            return Err(format!("filter has more than {MAX_FILTER_TERMS} comparisons"));
        }
        let op_word = match self.next() {
            Some(Token::Word(w)) => w,
            Some(t) => return Err(format!("expected an operator after '{path}' but found {}", t.describe())),
            None => return Err(format!("expected an operator after '{path}'")),
        };
        if op_word.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(path));
        }
        let op = CompareOp::parse(&op_word).ok_or_else(|| format!("unknown operator '{op_word}'"))?;
        let value = match self.next() {
            Some(Token::Str(s)) => Value::String(s),
            Some(Token::Word(w)) => match w.to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ => serde_json::from_str::<serde_json::Number>(&w)
                    .map(Value::Number)
                    .map_err(|_| format!("'{w}' is not a value; strings must be quoted"))?,
            },
            Some(t) => return Err(format!("expected a value but found {}", t.describe())),
            None => return Err(format!("expected a value after '{op_word}'")),
        };
        Ok(Filter::Compare(path, op, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Filter {
        match Filter::parse(s) {
            Ok(f) => f,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn parses_every_rfc_7644_example() {
        for f in [
            r#"userName Eq "john""#,
            r#"Username eq "john""#,
            r#"userName eq "bjensen""#,
            r#"name.familyName co "O'Malley""#,
            r#"userName sw "J""#,
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#,
            "title pr",
            r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
            r#"meta.lastModified ge "2011-05-13T04:42:34Z""#,
            r#"meta.lastModified lt "2011-05-13T04:42:34Z""#,
            r#"meta.lastModified le "2011-05-13T04:42:34Z""#,
            r#"title pr and userType eq "Employee""#,
            r#"title pr or userType eq "Intern""#,
            r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
            r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#,
            r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#,
            r#"userType eq "Employee" and (emails.type eq "work")"#,
            r#"userType eq "Employee" and emails[type eq "work" and value co "@example.com"]"#,
            r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915-6090-4610-87e4-49d8ca9f808d""#,
            r#"displayName eq "Group \"quoted\"""#,
            r#"emails[type eq "work"].value eq "x@example.com""#,
            "active eq false",
        ] {
            p(f);
        }
    }

    #[test]
    fn rejects_malformed_filters_with_invalid_filter() {
        for f in [
            "userName eq",
            r#"userName xx "a""#,
            r#"userName eq "a" and"#,
            r#"(userName eq "a""#,
            r#"emails[type eq "work""#,
            r#"userName eq john"#,
            r#"userName eq "unterminated"#,
            r#"eq "a""#,
            "",
        ] {
            let err = Filter::parse(f).expect_err(f);
            assert_eq!(err.scim_type, Some(crate::error::ScimType::InvalidFilter), "{f}");
        }
    }

    #[test]
    fn over_complex_filters_are_refused() {
        let deep = format!("{}userName eq \"a\"{}", "(".repeat(40), ")".repeat(40));
        assert!(Filter::parse(&deep).unwrap_err().detail.contains("nested"));
        let many = vec![r#"userName eq "a""#; 100].join(" or ");
        assert!(Filter::parse(&many).unwrap_err().detail.contains("comparisons"));
        let long = format!("userName eq \"{}\"", "a".repeat(5000));
        assert!(Filter::parse(&long).unwrap_err().detail.contains("longer"));
    }

    #[test]
    fn value_path_with_trailing_sub_attribute_becomes_a_conjunction() {
        let f = p(r#"emails[type eq "work"].value eq "x@example.com""#);
        let Filter::ValuePath(path, inner) = f else { panic!("not a value path") };
        assert_eq!(path.attr, "emails");
        assert!(matches!(*inner, Filter::And(_, _)));
    }

    #[test]
    fn urn_qualified_paths_split_at_the_last_colon() {
        let path = AttrPath::parse("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value").unwrap();
        assert_eq!(path.urn.as_deref(), Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"));
        assert_eq!(path.attr, "manager");
        assert_eq!(path.sub.as_deref(), Some("value"));
    }

    #[test]
    fn evaluates_in_memory_with_case_rules() {
        let doc =
            json!({"userName": "BJensen", "emails": [{"type": "work", "value": "b@Example.com"}], "active": true});
        let ci = |_: &AttrPath| false;
        assert!(p(r#"username eq "bjensen""#).matches(&doc, &ci));
        assert!(!p(r#"userName eq "bjensen""#).matches(&doc, &|_| true));
        assert!(p(r#"emails[type eq "work" and value ew "example.com"]"#).matches(&doc, &ci));
        assert!(p(r#"emails co "example""#).matches(&doc, &ci));
        assert!(p("active eq true and not (title pr)").matches(&doc, &ci));
        assert!(p(r#"userName ne "other""#).matches(&doc, &ci));
    }

    #[test]
    fn equality_filters_name_the_element_to_create() {
        let eqs = p(r#"type eq "work" and primary eq true"#).equalities().unwrap();
        assert_eq!(eqs, vec![("type".into(), json!("work")), ("primary".into(), json!(true))]);
        assert!(p(r#"value co "x""#).equalities().is_none());
    }
}
