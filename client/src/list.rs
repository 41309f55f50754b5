//! Listing keys: [`Client::list`] fetches one page (`GET /kv/?prefix=P&limit=N&after=C`),
//! [`Client::pages`] and [`Client::keys`] follow the cursors until the listing ends.
//!
//! Keys come in the frontends' order: by partition, then by the key's SHA-1, not by key. Every
//! key that starts with the prefix and stays live while the listing runs comes exactly once;
//! keys set or deleted meanwhile may or may not. A page may hold fewer keys than asked for,
//! even none, and still not be the last: only a page without a cursor ends a listing. Each page
//! is one call, retried on other frontends like a get (a cursor is valid on any frontend);
//! memory holds one page.

use crate::call::{Failure, Payload, Reply};
use crate::{Client, Error};
use bytes::Bytes;
use futures_util::Stream;
use http::{Method, StatusCode};
use std::collections::VecDeque;

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// The keys, as stored (bytes).
    pub keys: Vec<Bytes>,
    /// The cursor of the next page (pass it as `after`); `None` once the listing is complete.
    pub next: Option<String>,
}

/// A page as the frontend answers it: keys percent-encoded.
#[derive(Debug, serde::Deserialize)]
struct Answer {
    keys: Vec<String>,
    next: Option<String>,
}

/// `/kv/?prefix=P[&limit=N][&after=C]`.
fn list_path(prefix: &[u8], limit: Option<usize>, after: Option<&str>) -> String {
    let mut path = String::from("/kv/?prefix=");
    common::query::encode_into(prefix, &mut path);
    if let Some(limit) = limit {
        path.push_str(&format!("&limit={limit}"));
    }
    if let Some(after) = after {
        path.push_str("&after=");
        common::query::encode_into(after.as_bytes(), &mut path);
    }
    path
}

/// The page a frontend's JSON answer holds, or what is wrong with it.
fn parse_page(body: &[u8]) -> Result<KeyPage, String> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| format!("not a page of keys: {e}"))?;
    let keys = answer
        .keys
        .iter()
        .map(|key| {
            common::query::decode(key.as_bytes())
                .map(|key| Bytes::copy_from_slice(&key))
                .map_err(|escape| format!("a key with a malformed escape {escape:?}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(KeyPage { keys, next: answer.next })
}

impl Client {
    /// One page of the keys that start with `prefix` (empty: all keys): at most `limit` of them
    /// (1 to 10,000; `None`: the frontend's default, 1,000), after the cursor `after` (`None`:
    /// from the start). A bad limit or cursor is an [`Error::BadRequest`].
    pub async fn list(
        &self,
        prefix: impl AsRef<[u8]>,
        limit: Option<usize>,
        after: Option<&str>,
    ) -> Result<KeyPage, Error> {
        let path = list_path(prefix.as_ref(), limit, after);
        self.call(Method::GET, &path, Payload::Empty, |reply: Reply| async move {
            if reply.status == StatusCode::NOT_FOUND {
                return Err(reply.not_a_frontend().await);
            }
            let frontend = reply.frontend.clone();
            let status = reply.status.as_u16();
            let body = reply.collect().await?;
            parse_page(&body)
                .map_err(|message| Failure::Stop(Error::Unexpected { frontend, status, message }))
        })
        .await
    }

    /// Every page of the keys that start with `prefix`, `page_size` keys at most per page (see
    /// [`Client::list`]), following the cursors until the last page. After an error the stream
    /// ends; [`Client::list`] with the last cursor seen resumes where it stopped.
    pub fn pages(
        &self,
        prefix: impl AsRef<[u8]>,
        page_size: Option<usize>,
    ) -> impl Stream<Item = Result<KeyPage, Error>> + Send + 'static {
        let start = (self.clone(), prefix.as_ref().to_vec(), Some(None::<String>));
        futures_util::stream::unfold(start, move |(client, prefix, after)| async move {
            let after = after?;
            match client.list(&prefix, page_size, after.as_deref()).await {
                Ok(page) => {
                    let next = page.next.clone().map(Some);
                    Some((Ok(page), (client, prefix, next)))
                }
                Err(e) => Some((Err(e), (client, prefix, None))),
            }
        })
    }

    /// Every key that starts with `prefix`, one at a time, fetched a page of `page_size` at a
    /// time (see [`Client::pages`]).
    ///
    /// ```no_run
    /// # async fn example(client: client::Client) -> Result<(), client::Error> {
    /// use futures_util::TryStreamExt;
    /// let mut keys = std::pin::pin!(client.keys("user/", None));
    /// while let Some(key) = keys.try_next().await? {
    ///     println!("{}", String::from_utf8_lossy(&key));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn keys(
        &self,
        prefix: impl AsRef<[u8]>,
        page_size: Option<usize>,
    ) -> impl Stream<Item = Result<Bytes, Error>> + Send + 'static {
        let pages = Box::pin(self.pages(prefix, page_size));
        futures_util::stream::unfold((pages, VecDeque::new()), |(mut pages, mut keys)| async move {
            use futures_util::StreamExt;
            loop {
                if let Some(key) = keys.pop_front() {
                    return Some((Ok(key), (pages, keys)));
                }
                match pages.next().await? {
                    Ok(page) => keys.extend(page.keys),
                    Err(e) => return Some((Err(e), (pages, keys))),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_escape_the_prefix_and_the_cursor() {
        /// Prefix, limit, cursor, and the path they make.
        type Case = (&'static [u8], Option<usize>, Option<&'static str>, &'static str);
        let cases: &[Case] = &[
            (b"", None, None, "/kv/?prefix="),
            (b"user/", Some(333), None, "/kv/?prefix=user%2F&limit=333"),
            (b"\0\xff &", None, Some("01abcdef"), "/kv/?prefix=%00%FF%20%26&after=01abcdef"),
            (b"a", Some(1), Some("x&y"), "/kv/?prefix=a&limit=1&after=x%26y"),
        ];
        for &(prefix, limit, after, expected) in cases {
            assert_eq!(list_path(prefix, limit, after), expected);
        }
    }

    #[test]
    fn pages_decode_keys_to_bytes() {
        let page = parse_page(br#"{"keys":["a%2Fb","%00%FF","plain"],"next":"01ab"}"#).unwrap();
        let keys: Vec<&[u8]> = page.keys.iter().map(|k| k.as_ref()).collect();
        assert_eq!(keys, [&b"a/b"[..], b"\0\xff", b"plain"]);
        assert_eq!(page.next.as_deref(), Some("01ab"));
        assert_eq!(parse_page(br#"{"keys":[],"next":null}"#).unwrap(), KeyPage::default());
        let bad: &[(&[u8], &str)] = &[
            (b"ok\n", "not a page of keys"),
            (br#"{"keys":["%zz"],"next":null}"#, "malformed escape \"%zz\""),
            (br#"{"next":null}"#, "missing field `keys`"),
        ];
        for &(body, reason) in bad {
            let error = parse_page(body).unwrap_err();
            assert!(error.contains(reason), "{error}");
        }
    }
}
