//! Compile-time determinism checks on `#[workflow]` impl bodies.
//!
//! Workflow code is replayed, so anything that can give a different answer on replay (clocks,
//! sleeping, spawning, randomness, the environment, I/O, hash iteration order) is rejected at
//! the offending tokens with the workflow-safe alternative. The check scans tokens, so it also
//! sees inside macro calls (`println!("{:?}", SystemTime::now())`).
//!
//! A reviewed exception is marked, visibly, with `#[allow_nondeterministic("why")]` on a
//! statement or on a whole method.

use crate::errors::Errors;
use proc_macro2::{Spacing, TokenStream, TokenTree};
use quote::quote;
use syn::visit_mut::{self, VisitMut};
use syn::{
    Attribute, Block, Expr, ImplItem, Item, ItemImpl, ItemTrait, LitStr, Stmt, TraitItem,
    TraitItemFn,
};

const ALLOW: &str = "allow_nondeterministic";

/// One family of non-deterministic code, with what to use instead.
#[derive(Clone, Copy)]
enum Rule {
    Clock,
    Sleep,
    Spawn,
    Random,
    Uuid,
    Env,
    Fs,
    Net,
    HashMap,
    HashSet,
}

impl Rule {
    /// Whether the rule holds inside an inline step's closure (`workflow::inline(|| ..)`),
    /// whose value is recorded: reading the clock, randomness or the environment is what it
    /// is for; sleeping, spawning and I/O still are not.
    fn holds_inline(self) -> bool {
        matches!(self, Rule::Sleep | Rule::Spawn | Rule::Fs | Rule::Net)
    }

    fn message(self, path: &str) -> String {
        match self {
            Rule::Clock => format!("`{path}` reads the wall clock, which differs on replay; use `workflow::now()`, the workflow clock recorded in history"),
            Rule::Sleep => format!("`{path}` is neither durable nor replayed; use `workflow::sleep(duration)` or `workflow::sleep_until(time)`, durable timers"),
            Rule::Spawn => format!("`{path}` starts work the engine cannot record or replay; run durable steps in parallel with `workflow::join_all` or `workflow::select`"),
            Rule::Random => format!("`{path}` draws different numbers on replay; use `workflow::random()` or `workflow::random_range(..)`, deterministic per instance"),
            Rule::Uuid => format!("`{path}` makes a different id on replay; use `workflow::uuid()`, deterministic per instance"),
            Rule::Env => format!("`{path}` reads the process environment, which may differ on replay; pass configuration as workflow arguments, or read it in a service"),
            Rule::Fs => format!("`{path}` does file I/O in workflow code; do I/O in a service and call it from the workflow"),
            Rule::Net => format!("`{path}` does network I/O in workflow code; do I/O in a service and call it from the workflow"),
            Rule::HashMap => format!("`{path}` iterates in a random order that differs on replay; use `BTreeMap`"),
            Rule::HashSet => format!("`{path}` iterates in a random order that differs on replay; use `BTreeSet`"),
        }
    }
}

/// Path windows that are rejected wherever they appear in a path.
const RULES: &[(&[&str], Rule)] = &[
    (&["SystemTime", "now"], Rule::Clock),
    (&["Instant", "now"], Rule::Clock),
    (&["Utc", "now"], Rule::Clock),
    (&["Local", "now"], Rule::Clock),
    (&["OffsetDateTime", "now_utc"], Rule::Clock),
    (&["thread", "sleep"], Rule::Sleep),
    (&["tokio", "time"], Rule::Sleep),
    (&["tokio", "spawn"], Rule::Spawn),
    (&["tokio", "task"], Rule::Spawn),
    (&["thread", "spawn"], Rule::Spawn),
    (&["spawn_blocking"], Rule::Spawn),
    (&["spawn_local"], Rule::Spawn),
    (&["thread_rng"], Rule::Random),
    (&["OsRng"], Rule::Random),
    (&["Uuid", "new_v4"], Rule::Uuid),
    (&["Uuid", "now_v7"], Rule::Uuid),
    (&["Uuid", "now_v1"], Rule::Uuid),
    (&["std", "env"], Rule::Env),
    (&["env", "var"], Rule::Env),
    (&["env", "vars"], Rule::Env),
    (&["env", "var_os"], Rule::Env),
    (&["env", "args"], Rule::Env),
    (&["std", "fs"], Rule::Fs),
    (&["tokio", "fs"], Rule::Fs),
    (&["File", "open"], Rule::Fs),
    (&["File", "create"], Rule::Fs),
    (&["std", "net"], Rule::Net),
    (&["tokio", "net"], Rule::Net),
    (&["TcpStream"], Rule::Net),
    (&["TcpListener"], Rule::Net),
    (&["UdpSocket"], Rule::Net),
    (&["HashMap"], Rule::HashMap),
    (&["HashSet"], Rule::HashSet),
];

/// Paths accepted even though a rule matches part of them: pure values under a forbidden
/// module (`tokio::time::Duration` is `std::time::Duration`).
const ALLOWED: &[&[&str]] = &[&["tokio", "time", "Duration"]];

/// Checks every method body of the impl, honouring and removing `#[allow_nondeterministic]`.
pub(crate) fn check_impl(item: &mut ItemImpl, errors: &mut Errors) {
    for impl_item in &mut item.items {
        if let ImplItem::Fn(f) = impl_item {
            check_fn(&mut f.attrs, &mut f.block, errors);
        }
    }
}

/// Checks the default method bodies of a `#[workflow]` trait: they run as workflow code
/// whenever an impl does not override them.
pub(crate) fn check_trait(item: &mut ItemTrait, errors: &mut Errors) {
    for trait_item in &mut item.items {
        if let TraitItem::Fn(TraitItemFn {
            attrs,
            default: Some(block),
            ..
        }) = trait_item
        {
            check_fn(attrs, block, errors);
        }
    }
}

fn check_fn(attrs: &mut Vec<Attribute>, block: &mut Block, errors: &mut Errors) {
    if take_allow(attrs, errors) {
        return;
    }
    let mut stash = StashAllowed::default();
    stash.visit_block_mut(block);
    for e in stash.errors.drain(..) {
        errors.push(e);
    }
    scan(quote!(#block), errors, false);
    RestoreAllowed(stash.stashed.into_iter()).visit_block_mut(block);
}

/// Removes our attribute from `attrs`; true if it was there. A missing reason is an error.
fn take_allow(attrs: &mut Vec<Attribute>, errors: &mut Errors) -> bool {
    let Some(index) = attrs.iter().position(|a| a.path().is_ident(ALLOW)) else {
        return false;
    };
    let attr = attrs.remove(index);
    match attr.parse_args::<LitStr>() {
        Ok(reason) if !reason.value().trim().is_empty() => {}
        _ => errors.spanned(
            &attr,
            format!("say why this exception is safe to replay: #[{ALLOW}(\"reason\")]"),
        ),
    }
    true
}

/// Replaces statements marked `#[allow_nondeterministic]` with a placeholder, keeping them
/// aside, so the scan skips them.
#[derive(Default)]
struct StashAllowed {
    stashed: Vec<Stmt>,
    errors: Vec<syn::Error>,
}

fn placeholder() -> Stmt {
    Stmt::Item(Item::Verbatim(quote!(__infinitic_allowed_statement)))
}

fn is_placeholder(stmt: &Stmt) -> bool {
    matches!(stmt, Stmt::Item(Item::Verbatim(ts)) if ts.to_string() == "__infinitic_allowed_statement")
}

impl VisitMut for StashAllowed {
    fn visit_stmt_mut(&mut self, stmt: &mut Stmt) {
        let mut errors = Errors::default();
        let allowed = stmt_attrs(stmt).is_some_and(|attrs| take_allow(attrs, &mut errors));
        if let Some(e) = errors.into_inner() {
            self.errors.push(e);
        }
        if allowed {
            self.stashed.push(std::mem::replace(stmt, placeholder()));
        } else {
            visit_mut::visit_stmt_mut(self, stmt);
        }
    }
}

struct RestoreAllowed<I>(I);

impl<I: Iterator<Item = Stmt>> VisitMut for RestoreAllowed<I> {
    fn visit_stmt_mut(&mut self, stmt: &mut Stmt) {
        if is_placeholder(stmt) {
            if let Some(original) = self.0.next() {
                *stmt = original;
            }
        } else {
            visit_mut::visit_stmt_mut(self, stmt);
        }
    }
}

fn stmt_attrs(stmt: &mut Stmt) -> Option<&mut Vec<Attribute>> {
    match stmt {
        Stmt::Local(local) => Some(&mut local.attrs),
        Stmt::Macro(mac) => Some(&mut mac.attrs),
        Stmt::Item(Item::Fn(f)) => Some(&mut f.attrs),
        Stmt::Item(Item::Use(u)) => Some(&mut u.attrs),
        Stmt::Item(Item::Const(c)) => Some(&mut c.attrs),
        Stmt::Item(Item::Static(s)) => Some(&mut s.attrs),
        Stmt::Expr(expr, _) => stmt_expr_attrs(expr),
        _ => None,
    }
}

/// The attributes written before an expression statement. syn attaches them to the leftmost
/// operand of a binary, assignment, cast or range expression (`#[a] x += y;` puts `#[a]` on
/// `x`), so look there when the expression itself does not carry ours.
fn stmt_expr_attrs(expr: &mut Expr) -> Option<&mut Vec<Attribute>> {
    if expr_attrs(expr).is_some_and(|attrs| attrs.iter().any(|a| a.path().is_ident(ALLOW))) {
        return expr_attrs(expr);
    }
    match expr {
        Expr::Binary(e) => stmt_expr_attrs(&mut e.left),
        Expr::Assign(e) => stmt_expr_attrs(&mut e.left),
        Expr::Cast(e) => stmt_expr_attrs(&mut e.expr),
        Expr::Range(syn::ExprRange {
            start: Some(start), ..
        }) => stmt_expr_attrs(start),
        _ => expr_attrs(expr),
    }
}

fn expr_attrs(expr: &mut Expr) -> Option<&mut Vec<Attribute>> {
    Some(match expr {
        Expr::Array(e) => &mut e.attrs,
        Expr::Assign(e) => &mut e.attrs,
        Expr::Async(e) => &mut e.attrs,
        Expr::Await(e) => &mut e.attrs,
        Expr::Binary(e) => &mut e.attrs,
        Expr::Block(e) => &mut e.attrs,
        Expr::Break(e) => &mut e.attrs,
        Expr::Call(e) => &mut e.attrs,
        Expr::Cast(e) => &mut e.attrs,
        Expr::Closure(e) => &mut e.attrs,
        Expr::Const(e) => &mut e.attrs,
        Expr::Continue(e) => &mut e.attrs,
        Expr::Field(e) => &mut e.attrs,
        Expr::ForLoop(e) => &mut e.attrs,
        Expr::Group(e) => &mut e.attrs,
        Expr::If(e) => &mut e.attrs,
        Expr::Index(e) => &mut e.attrs,
        Expr::Let(e) => &mut e.attrs,
        Expr::Lit(e) => &mut e.attrs,
        Expr::Loop(e) => &mut e.attrs,
        Expr::Macro(e) => &mut e.attrs,
        Expr::Match(e) => &mut e.attrs,
        Expr::MethodCall(e) => &mut e.attrs,
        Expr::Paren(e) => &mut e.attrs,
        Expr::Path(e) => &mut e.attrs,
        Expr::Range(e) => &mut e.attrs,
        Expr::Reference(e) => &mut e.attrs,
        Expr::Repeat(e) => &mut e.attrs,
        Expr::Return(e) => &mut e.attrs,
        Expr::Struct(e) => &mut e.attrs,
        Expr::Try(e) => &mut e.attrs,
        Expr::TryBlock(e) => &mut e.attrs,
        Expr::Tuple(e) => &mut e.attrs,
        Expr::Unary(e) => &mut e.attrs,
        Expr::Unsafe(e) => &mut e.attrs,
        Expr::While(e) => &mut e.attrs,
        Expr::Yield(e) => &mut e.attrs,
        _ => return None,
    })
}

/// Walks the tokens, reading each path (`a::b::c`) and `select!`, and reports rule matches;
/// `inline` inside the arguments of `inline(..)` (an inline step), where fewer rules hold.
fn scan(tokens: TokenStream, errors: &mut Errors, inline: bool) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            TokenTree::Group(group) => {
                scan(group.stream(), errors, inline);
                i += 1;
            }
            TokenTree::Ident(first) => {
                // A path: ident (`::` ident)*; `segments` holds (name, index of its token).
                let mut segments = vec![(first.to_string(), i)];
                let mut j = i + 1;
                while j + 2 < tokens.len() && is_path_sep(&tokens[j], &tokens[j + 1]) {
                    match &tokens[j + 2] {
                        TokenTree::Ident(next) => {
                            segments.push((next.to_string(), j + 2));
                            j += 3;
                        }
                        _ => break,
                    }
                }
                check_path(&tokens, &segments, errors, inline);
                let last = &segments[segments.len() - 1];
                if last.0 == "inline" {
                    if let Some(TokenTree::Group(arguments)) = tokens.get(j) {
                        if arguments.delimiter() == proc_macro2::Delimiter::Parenthesis {
                            scan(arguments.stream(), errors, true);
                            i = j + 1;
                            continue;
                        }
                    }
                }
                if last.0 == "select"
                    && matches!(tokens.get(j), Some(TokenTree::Punct(p)) if p.as_char() == '!')
                {
                    let span_tokens: TokenStream = tokens[i..=j].iter().cloned().collect();
                    errors.spanned(
                        span_tokens,
                        "`select!` polls its branches in a random order that differs on replay; use `workflow::select` or `workflow::select2`",
                    );
                }
                i = j;
            }
            _ => i += 1,
        }
    }
}

fn is_path_sep(a: &TokenTree, b: &TokenTree) -> bool {
    matches!((a, b), (TokenTree::Punct(a), TokenTree::Punct(b))
        if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':')
}

fn check_path(
    tokens: &[TokenTree],
    segments: &[(String, usize)],
    errors: &mut Errors,
    inline: bool,
) {
    let names: Vec<&str> = segments.iter().map(|(n, _)| n.as_str()).collect();
    if ALLOWED
        .iter()
        .any(|allowed| names.windows(allowed.len()).any(|w| w == *allowed))
    {
        return;
    }
    let found = RULES.iter().find_map(|(pattern, rule)| {
        names
            .windows(pattern.len())
            .position(|w| w == *pattern)
            .map(|start| (start, pattern.len(), *rule))
    });
    let found = found.or_else(|| {
        // Anything under the `rand` crate.
        (names.len() > 1 && names[0] == "rand").then_some((0, names.len(), Rule::Random))
    });
    if let Some((start, len, rule)) = found.filter(|(_, _, rule)| !inline || rule.holds_inline()) {
        // Point at the path as written (`std::env::var`, not just `std::env`), except that
        // for the hash collections the type is the culprit (`HashSet`, not `HashSet::new`).
        let end = match rule {
            Rule::HashMap | Rule::HashSet => start + len,
            _ => names.len(),
        };
        let first = segments[0].1;
        let last = segments[end - 1].1;
        let span_tokens: TokenStream = tokens[first..=last].iter().cloned().collect();
        let path = names[..end].join("::");
        errors.spanned(span_tokens, rule.message(&path));
    }
}
