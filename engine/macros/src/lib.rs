//! `#[percore::main]` and `#[percore::test]`: run an `async fn` on a percore core.
//!
//! `#[percore::main]` turns `async fn main()` into a `fn main()` that runs the body with
//! `percore::block_on` (one core on the main thread). `#[percore::test]` does the same for an
//! `async fn` test and adds `#[test]`. Both are plain token rewrites: the function's
//! attributes, signature and body are kept; only `async` is removed and the body wrapped.

use proc_macro::{Delimiter, Group, Ident, Punct, Spacing, Span, TokenStream, TokenTree};

/// Runs `async fn main` on a single percore core.
///
/// ```ignore
/// #[percore::main]
/// async fn main() {
///     percore::time::sleep(std::time::Duration::from_millis(1)).await;
/// }
/// ```
#[proc_macro_attribute]
pub fn main(_attr: TokenStream, item: TokenStream) -> TokenStream {
    rewrite(item, false)
}

/// Runs an `async fn` test on a single percore core.
///
/// ```ignore
/// #[percore::test]
/// async fn sleeps() {
///     percore::time::sleep(std::time::Duration::from_millis(1)).await;
/// }
/// ```
#[proc_macro_attribute]
pub fn test(_attr: TokenStream, item: TokenStream) -> TokenStream {
    rewrite(item, true)
}

fn rewrite(item: TokenStream, test: bool) -> TokenStream {
    let mut tokens: Vec<TokenTree> = item.into_iter().collect();
    let Some(async_at) = tokens
        .iter()
        .position(|t| matches!(t, TokenTree::Ident(i) if i.to_string() == "async"))
    else {
        return compile_error("percore: the function must be `async fn`");
    };
    tokens.remove(async_at);
    let Some(TokenTree::Group(body)) = tokens.pop() else {
        return compile_error("percore: expected a function body");
    };
    if body.delimiter() != Delimiter::Brace {
        return compile_error("percore: expected a function body");
    }
    // percore::block_on(async move { BODY })
    let mut call: Vec<TokenTree> = path(&["percore", "block_on"]);
    let mut inner = TokenStream::new();
    inner.extend([
        TokenTree::Ident(Ident::new("async", Span::call_site())),
        TokenTree::Ident(Ident::new("move", Span::call_site())),
        TokenTree::Group(body),
    ]);
    call.push(TokenTree::Group(Group::new(Delimiter::Parenthesis, inner)));
    let new_body = Group::new(Delimiter::Brace, call.into_iter().collect());
    let mut out = TokenStream::new();
    if test {
        out.extend([
            TokenTree::Punct(Punct::new('#', Spacing::Alone)),
            TokenTree::Group(Group::new(
                Delimiter::Bracket,
                TokenStream::from(TokenTree::Ident(Ident::new("test", Span::call_site()))),
            )),
        ]);
    }
    out.extend(tokens);
    out.extend([TokenTree::Group(new_body)]);
    out
}

fn path(segments: &[&str]) -> Vec<TokenTree> {
    let mut out = vec![
        TokenTree::Punct(Punct::new(':', Spacing::Joint)),
        TokenTree::Punct(Punct::new(':', Spacing::Alone)),
    ];
    for (i, seg) in segments.iter().enumerate() {
        if i > 0 {
            out.push(TokenTree::Punct(Punct::new(':', Spacing::Joint)));
            out.push(TokenTree::Punct(Punct::new(':', Spacing::Alone)));
        }
        out.push(TokenTree::Ident(Ident::new(seg, Span::call_site())));
    }
    out
}

fn compile_error(msg: &str) -> TokenStream {
    format!("compile_error!({msg:?});")
        .parse()
        .unwrap_or_default()
}
