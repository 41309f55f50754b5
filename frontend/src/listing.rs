//! Listing keys: `GET /kv/?prefix=P&limit=N[&after=CURSOR]` answers
//! `{"keys": ["<percent-encoded key>", ...], "next": "<cursor>" | null}`.
//!
//! What a listing guarantees:
//! - **Every key once**: a key that starts with the prefix and is live (set, not deleted)
//!   during the whole listing appears in exactly one page, whatever storage nodes die between
//!   pages and however the map changes (partitions split or move), since every page is read
//!   from read replicas holding a lease, like a leased get, and those hold every acknowledged
//!   write. A key set or deleted while the listing runs may or may not appear. Deleted keys
//!   (tombstones) never do.
//! - **Order by hash, not by key**: keys are hashed over partitions, so they come partition by
//!   partition and, within one, by the key's 4-byte SHA-1 prefix, then by its bytes.
//! - **Stateless frontends**: the cursor carries the whole position, so any frontend continues
//!   any listing, and a cursor stays valid when partitions split or move.
//! - **Bounded pages**: at most `limit` keys ([`DEFAULT_LIMIT`], 1 to [`MAX_LIMIT`]); a page
//!   also ends once its keys add up to [`PAGE_KEY_BYTES`], once it examined [`PAGE_SCAN`]
//!   records, after [`PAGE_CALLS`] storage calls, or, once it has made one call, when
//!   [`PAGE_TIME`] has passed. So a page may hold fewer keys than `limit`, even none, with a
//!   `next` that is not null: only a null `next` ends a listing. A frontend holds one page per
//!   request, whatever the number of keys.
//!
//! How: storage nodes keep records ordered by the key's 4-byte hash prefix, then the key, so
//! one partition is one contiguous range of that order whatever the map's digit count. A
//! [`Position`] is a point in that order; everything before it has been listed. A page walks
//! the partitions of the frontend's current map from the cursor's position, asking one read
//! replica of each for keys from there (`common::proto::ListKeys`; replicas in the frontend's
//! preferred order, recently failed ones last, the next one on failure, each call within
//! [`CALL_TIMEOUT`]); a node answers where it stopped, and the page goes on from there. The
//! assembly is pure ([`Page`]); [`list`] only makes the calls.
//!
//! A cursor is the hex of a version byte, the position, and 4 bytes of SHA-1 over the position
//! and the prefix: a damaged cursor, or one used with another prefix, answers 400. Positions are
//! short (the storage nodes name the first byte where neighbouring records differ), so cursors
//! are too, mostly 18 hex digits.
//!
//! Deliberate limits: a listing needs a leased replica for each partition; while none holds a
//! lease (the controller down), it answers 503 instead of comparing replicas as a get does.
//! Keys with a prefix are spread over every partition by their hash, so every listing examines
//! every record of the cluster: a rare prefix costs as much as listing all keys, in pages of at
//! most [`PAGE_SCAN`] records examined.

use crate::api::ApiError;
use crate::replica::ReplicaFailure;
use crate::routing::Routes;
use crate::Frontend;
use common::http::{self as h, Body, RpcError};
use common::partition::{self, Partition};
use common::placement::NodeId;
use common::proto::{self, ListKeys, ListedKeys};
use common::query::Query;
use http::{Response, StatusCode};
use std::time::{Duration, Instant};

/// The parameters `GET /kv/` takes.
pub const PARAMETERS: &[&str] = &["prefix", "limit", "after"];
/// Keys per page without `limit`.
pub const DEFAULT_LIMIT: usize = 1000;
/// The largest `limit`.
pub const MAX_LIMIT: usize = proto::MAX_LISTED_KEYS;
/// Records a page examines at most, matching or not.
pub const PAGE_SCAN: usize = proto::MAX_SCANNED_RECORDS;
/// A page ends once its keys (unescaped) add up to this many bytes.
pub const PAGE_KEY_BYTES: usize = 4 << 20;
/// Storage calls a page makes at most (a map of many nearly empty partitions).
pub const PAGE_CALLS: usize = 256;
/// A page starts no storage call after this much time (it always makes one).
pub const PAGE_TIME: Duration = Duration::from_secs(1);
/// Deadline of one storage call (up to [`PAGE_SCAN`] records examined).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

const CURSOR_VERSION: u8 = 1;
const CHECK_BYTES: usize = 4;

/// A point in the order of stored keys (4-byte hash prefix, then key bytes): everything before
/// it has been listed. Always at least 4 bytes: a shorter one is padded with zeros, which names
/// the same point, since no stored key (4 bytes or more) lies in between.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position(Vec<u8>);

impl Position {
    /// Before every key.
    pub fn start() -> Self {
        Self(vec![0; 4])
    }

    pub fn new(mut bytes: Vec<u8>) -> Self {
        if bytes.len() < 4 {
            bytes.resize(4, 0);
        }
        Self(bytes)
    }

    /// The start of `partition` in a map of `digits` digits.
    pub fn of_partition(partition: Partition, digits: u8) -> Self {
        Self(partition::prefix_range(partition, digits).0.to_be_bytes().to_vec())
    }

    /// The partition this position falls in, in a map of `digits` digits.
    pub fn partition(&self, digits: u8) -> Partition {
        let prefix = u32::from_be_bytes(self.0[..4].try_into().expect("at least 4 bytes"));
        partition::of_prefix(prefix, digits)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error(
        "malformed cursor in `after`: not an even number of hex digits (pass the `next` of the page \
         before, as it was given)"
    )]
    NotHex,
    #[error("malformed cursor in `after`: too short to be a cursor")]
    TooShort,
    #[error("malformed cursor in `after`: unknown version {0} (made by a newer frontend?)")]
    Version(u8),
    #[error(
        "cursor in `after` does not belong to this listing: it is damaged, or comes from a listing \
         with another prefix"
    )]
    Mismatch,
}

/// The cursor of a listing of `prefix` that stands at `position`.
pub fn encode_cursor(position: &Position, prefix: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(1 + position.0.len() + CHECK_BYTES);
    bytes.push(CURSOR_VERSION);
    bytes.extend_from_slice(&position.0);
    bytes.extend_from_slice(&check(position, prefix));
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The position a cursor of a listing of `prefix` names.
pub fn decode_cursor(cursor: &[u8], prefix: &[u8]) -> Result<Position, CursorError> {
    if !cursor.len().is_multiple_of(2) {
        return Err(CursorError::NotHex);
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let bytes = cursor
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or(CursorError::NotHex)?;
    if bytes.len() < 1 + 4 + CHECK_BYTES {
        return Err(CursorError::TooShort);
    }
    if bytes[0] != CURSOR_VERSION {
        return Err(CursorError::Version(bytes[0]));
    }
    let (position, sum) = bytes[1..].split_at(bytes.len() - 1 - CHECK_BYTES);
    let position = Position(position.to_vec());
    if check(&position, prefix) != sum {
        return Err(CursorError::Mismatch);
    }
    Ok(position)
}

/// 4 bytes of SHA-1 over the cursor's version, its position and the listing's prefix.
fn check(position: &Position, prefix: &[u8]) -> [u8; CHECK_BYTES] {
    let mut input = Vec::with_capacity(5 + position.0.len() + prefix.len());
    input.push(CURSOR_VERSION);
    input.extend_from_slice(&(position.0.len() as u32).to_be_bytes());
    input.extend_from_slice(&position.0);
    input.extend_from_slice(prefix);
    let digest = partition::hash(&input);
    [digest[0], digest[1], digest[2], digest[3]]
}

/// What a page may spend before it ends (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    pub key_bytes: usize,
    pub scan: usize,
    pub calls: usize,
}

impl Default for Budgets {
    fn default() -> Self {
        Self { key_bytes: PAGE_KEY_BYTES, scan: PAGE_SCAN, calls: PAGE_CALLS }
    }
}

/// One storage call a page needs: a partition from a position, within what is left of the
/// page's budgets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub partition: Partition,
    pub digits: u8,
    /// `None`: the partition's start.
    pub from: Option<Position>,
    pub limit: usize,
    pub max_bytes: usize,
    pub max_scan: usize,
}

impl Call {
    /// The request a storage node gets for this call.
    pub fn request(&self, prefix: &[u8]) -> ListKeys {
        ListKeys {
            digits: self.digits,
            partition: self.partition,
            prefix: common::query::encode(prefix),
            from: self.from.as_ref().map(|from| common::query::encode(&from.0)),
            limit: self.limit,
            max_bytes: self.max_bytes,
            max_scan: self.max_scan,
        }
    }
}

/// A page being assembled, and where the listing stands. Pure: the caller asks
/// [`Page::next_call`], makes the call, and hands the answer to [`Page::absorb`], until there
/// is no call left; then [`Page::finish`].
#[derive(Debug)]
pub struct Page {
    limit: usize,
    budgets: Budgets,
    keys: Vec<String>,
    key_bytes: usize,
    scanned: usize,
    calls: usize,
    /// `None` once the last partition has been listed.
    position: Option<Position>,
}

/// A page as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listing {
    /// Percent-encoded keys.
    pub keys: Vec<String>,
    /// The cursor of the next page; `None` (null) once the listing is complete.
    pub next: Option<String>,
}

impl Page {
    /// A page of at most `limit` keys from `from`, with the default budgets.
    pub fn new(limit: usize, from: Position) -> Self {
        Self::with_budgets(limit, from, Budgets::default())
    }

    pub fn with_budgets(limit: usize, from: Position, budgets: Budgets) -> Self {
        Self { limit, budgets, keys: Vec::new(), key_bytes: 0, scanned: 0, calls: 0, position: Some(from) }
    }

    /// Storage calls made so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// The next storage call in a map of `digits` digits, or `None` if the page is complete.
    pub fn next_call(&self, digits: u8) -> Option<Call> {
        let position = self.position.as_ref()?;
        let budgets = &self.budgets;
        if self.keys.len() >= self.limit
            || self.key_bytes >= budgets.key_bytes
            || self.scanned >= budgets.scan
            || self.calls >= budgets.calls
        {
            return None;
        }
        let partition = position.partition(digits);
        let from = (*position != Position::of_partition(partition, digits)).then(|| position.clone());
        Some(Call {
            partition,
            digits,
            from,
            limit: self.limit - self.keys.len(),
            max_bytes: budgets.key_bytes - self.key_bytes,
            max_scan: (budgets.scan - self.scanned).min(proto::MAX_SCANNED_RECORDS),
        })
    }

    /// Takes a storage node's answer to `call`; refuses (changing nothing) an answer that does
    /// not keep the call's bounds or does not move forward within the partition.
    pub fn absorb(&mut self, call: &Call, answer: ListedKeys) -> Result<(), String> {
        if answer.keys.len() > call.limit {
            return Err(format!("answered {} keys, {} were asked for", answer.keys.len(), call.limit));
        }
        let count = partition::count(call.digits);
        let following =
            (call.partition + 1 < count).then(|| Position::of_partition(call.partition + 1, call.digits));
        let position = match answer.next {
            None => following,
            Some(next) => {
                let next = common::query::decode(next.as_bytes())
                    .map_err(|escape| format!("answered a malformed position ({escape:?})"))?;
                let next = Position::new(next.into_owned());
                let from =
                    call.from.clone().unwrap_or_else(|| Position::of_partition(call.partition, call.digits));
                if next <= from || following.as_ref().is_some_and(|following| next >= *following) {
                    return Err(format!(
                        "answered a position outside partition {} after the one asked for",
                        call.partition
                    ));
                }
                Some(next)
            }
        };
        self.position = position;
        self.keys.extend(answer.keys);
        self.key_bytes += answer.key_bytes;
        self.scanned += answer.scanned.max(1);
        self.calls += 1;
        Ok(())
    }

    /// The page as answered: its keys, and the cursor of the next page of a listing of `prefix`.
    pub fn finish(self, prefix: &[u8]) -> Listing {
        Listing { keys: self.keys, next: self.position.map(|position| encode_cursor(&position, prefix)) }
    }
}

/// What `GET /kv/` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest<'a> {
    pub prefix: &'a [u8],
    pub limit: usize,
    pub from: Position,
}

impl<'a> ListRequest<'a> {
    /// Reads the parameters of `query` (already checked for unknown ones); a prefix longer
    /// than `max_key_bytes` could match no key and is refused like such a key.
    pub fn parse(query: &'a Query<'_>, max_key_bytes: usize) -> Result<Self, ApiError> {
        let prefix = query.get("prefix").unwrap_or_default();
        if prefix.len() > max_key_bytes {
            return Err(ApiError::TooLarge(format!(
                "prefix is {} bytes; no key is longer than {max_key_bytes}",
                prefix.len()
            )));
        }
        let limit = query.parsed::<usize>("limit")?.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::BadRequest(format!("`limit` must be 1 to {MAX_LIMIT} (got {limit})")));
        }
        let from = match query.get("after") {
            None => Position::start(),
            Some(cursor) => decode_cursor(cursor, prefix).map_err(|e| ApiError::BadRequest(e.to_string()))?,
        };
        Ok(Self { prefix, limit, from })
    }
}

/// `GET /kv/`: one page of the listing `query` asks for (its parameters already checked
/// against [`PARAMETERS`]).
pub async fn list(frontend: &Frontend, query: &Query<'_>) -> Result<Response<Body>, ApiError> {
    let request = ListRequest::parse(query, frontend.limits.max_key_bytes)?;
    let routes = frontend.router.current().ok_or(ApiError::NoMap)?;
    let digits = routes.map.digits;
    let mut page = Page::new(request.limit, request.from);
    let started = Instant::now();
    while let Some(call) = page.next_call(digits) {
        if page.calls() > 0 && started.elapsed() >= PAGE_TIME {
            break;
        }
        if let Err(why) = ask(frontend, &routes, &call, request.prefix, &mut page).await {
            if page.calls() == 0 {
                return Err(ApiError::Unavailable(why));
            }
            // The page ends before that partition; the next request asks for it again.
            log::info!("listing page cut short: {why}");
            break;
        }
    }
    Ok(h::json(StatusCode::OK, &page.finish(request.prefix)))
}

/// Makes `call` on the first read replica of its partition that answers, and adds the answer
/// to `page`.
async fn ask(
    frontend: &Frontend,
    routes: &Routes,
    call: &Call,
    prefix: &[u8],
    page: &mut Page,
) -> Result<(), String> {
    let request = call.request(prefix);
    let readable: Vec<NodeId> = routes.map.read_set(call.partition).collect();
    let mut failures = Vec::new();
    let mut answered = false;
    for node in frontend.read_order(call.partition, readable) {
        let addr = routes.addr(node).to_owned();
        let url = format!("http://{addr}{}", proto::KEYS_PATH);
        let result = frontend
            .client
            .post_json::<_, ListedKeys>(&url, &request, CALL_TIMEOUT)
            .await
            .and_then(|answer| page.absorb(call, answer).map_err(RpcError::Protocol));
        crate::metrics::replica_call(node, "list", result.as_ref().map(|_| "answered"));
        match result {
            Ok(()) => {
                answered = true;
                break;
            }
            Err(error) => {
                let failure = ReplicaFailure { node, addr, error };
                log::debug!("replica listing failed, trying the next replica: {failure}");
                failures.push(failure);
            }
        }
    }
    if !failures.is_empty() {
        frontend.suspect(&failures);
    }
    match (answered, failures.is_empty()) {
        (true, _) => Ok(()),
        (false, true) => Err(format!("partition {} has no replica up to list it", call.partition)),
        (false, false) => Err(format!(
            "no replica of partition {} answered the listing: {}",
            call.partition,
            failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn stored(key: &[u8]) -> Vec<u8> {
        [&partition::hash_prefix(key).to_be_bytes()[..], key].concat()
    }

    #[test]
    fn positions_pad_to_four_bytes_and_know_their_partition() {
        let cases: &[(&[u8], &[u8], u8, Partition)] = &[
            (b"", b"\0\0\0\0", 1, 0),
            (b"\x13", b"\x13\0\0\0", 1, 0x1),
            (b"\x13", b"\x13\0\0\0", 2, 0x13),
            (b"\x13\x57\x9b\xdf", b"\x13\x57\x9b\xdf", 6, 0x13579b),
            (b"\xff\xff\xff\xffkey", b"\xff\xff\xff\xffkey", 3, 0xfff),
        ];
        for &(raw, padded, digits, partition) in cases {
            let position = Position::new(raw.to_vec());
            assert_eq!((position.as_bytes(), position.partition(digits)), (padded, partition), "{raw:?}");
        }
        assert_eq!(Position::of_partition(0x13, 2), Position::new(vec![0x13]));
        assert_eq!(Position::start(), Position::of_partition(0, 3));
    }

    #[test]
    fn cursors_round_trip_and_refuse_damage_and_other_prefixes() {
        let positions =
            [Position::start(), Position::new(vec![0x13]), Position::new(stored(b"a/\0\xff key"))];
        for position in &positions {
            for prefix in [&b""[..], b"a/", b"\xff\0"] {
                let cursor = encode_cursor(position, prefix);
                assert!(cursor.bytes().all(|b| b.is_ascii_hexdigit()), "{cursor}");
                assert_eq!(decode_cursor(cursor.as_bytes(), prefix).as_ref(), Ok(position), "{cursor}");
                assert_eq!(decode_cursor(cursor.to_uppercase().as_bytes(), prefix).as_ref(), Ok(position));
                assert_eq!(decode_cursor(cursor.as_bytes(), b"b/"), Err(CursorError::Mismatch));
            }
        }
        assert_eq!(encode_cursor(&Position::new(vec![0x13]), b"").len(), 18, "version, 4 bytes, check");
        let good = encode_cursor(&Position::new(vec![0x13]), b"a");
        let long = encode_cursor(&Position::new(stored(b"a/key")), b"a");
        let flipped = format!("{}{}", &good[..5], if &good[5..6] == "0" { "1" } else { "0" }) + &good[6..];
        let cases: Vec<(String, CursorError)> = vec![
            (flipped, CursorError::Mismatch),
            (good[..good.len() - 2].to_owned(), CursorError::TooShort),
            (long[..long.len() - 2].to_owned(), CursorError::Mismatch),
            (good[..good.len() - 1].to_owned(), CursorError::NotHex),
            (format!("zz{}", &good[2..]), CursorError::NotHex),
            ("".to_owned(), CursorError::TooShort),
            ("0113000000".to_owned(), CursorError::TooShort),
            (format!("02{}", &good[2..]), CursorError::Version(2)),
        ];
        for (cursor, error) in cases {
            assert_eq!(decode_cursor(cursor.as_bytes(), b"a"), Err(error), "{cursor:?}");
        }
    }

    /// A storage node over `records` (stored key → live), answering as the storage crate does
    /// but naming each next record's whole stored key as the position to resume at.
    fn answer(records: &BTreeMap<Vec<u8>, bool>, call: &Call, prefix: &[u8]) -> ListedKeys {
        let (start, end) = partition::prefix_range(call.partition, call.digits);
        let from = call.from.clone().map_or_else(|| start.to_be_bytes().to_vec(), |from| from.0);
        let mut inside = records.range(from..).take_while(|(k, _)| k[..4] <= end.to_be_bytes()[..]);
        let mut listed = ListedKeys { keys: Vec::new(), next: None, scanned: 0, key_bytes: 0 };
        for (stored, &live) in inside.by_ref() {
            listed.scanned += 1;
            if live && stored[4..].starts_with(prefix) {
                listed.keys.push(common::query::encode(&stored[4..]));
                listed.key_bytes += stored.len() - 4;
            }
            if listed.keys.len() >= call.limit
                || listed.key_bytes >= call.max_bytes
                || listed.scanned >= call.max_scan
            {
                listed.next = inside.next().map(|(next, _)| common::query::encode(next));
                break;
            }
        }
        listed
    }

    /// Every page of a listing of `prefix`, each with the map digits `digits(page number)`,
    /// through cursors as a client passes them.
    fn pages(
        records: &BTreeMap<Vec<u8>, bool>,
        prefix: &[u8],
        limit: usize,
        budgets: Budgets,
        digits: impl Fn(usize) -> u8,
    ) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let from = cursor.map_or_else(Position::start, |c| decode_cursor(c.as_bytes(), prefix).unwrap());
            let mut page = Page::with_budgets(limit, from, budgets);
            let digits = digits(pages.len());
            while let Some(call) = page.next_call(digits) {
                let listed = answer(records, &call, prefix);
                page.absorb(&call, listed).unwrap();
            }
            let listing = page.finish(prefix);
            pages.push(listing.keys);
            match listing.next {
                Some(next) => cursor = Some(next),
                None => return pages,
            }
            assert!(pages.len() < 100_000, "the listing does not end");
        }
    }

    #[test]
    fn pages_list_every_live_key_with_the_prefix_once_across_splits_and_budgets() {
        let mut records = BTreeMap::new();
        let mut expected = BTreeSet::new();
        for i in 0..400 {
            let key = format!("p/{i}");
            records.insert(stored(key.as_bytes()), true);
            expected.insert(common::query::encode(key.as_bytes()));
            records.insert(stored(format!("p/deleted/{i}").as_bytes()), false);
            records.insert(stored(format!("q/{i}").as_bytes()), true);
        }
        let binary: &[u8] = b"p/\0\xff/%&\n";
        records.insert(stored(binary), true);
        expected.insert(common::query::encode(binary));
        let unlimited = Budgets { key_bytes: usize::MAX, scan: usize::MAX, calls: usize::MAX };
        let cases = [
            (1, unlimited),
            (7, unlimited),
            (333, unlimited),
            (MAX_LIMIT, unlimited),
            (50, Budgets { scan: 9, ..unlimited }),
            (50, Budgets { calls: 2, ..unlimited }),
            (50, Budgets { key_bytes: 20, ..unlimited }),
        ];
        // The map splits while the listing runs: 1 digit, then 2 from the third page, 3 from
        // the sixth.
        let splitting = |page: usize| -> u8 {
            match page {
                0..=1 => 1,
                2..=4 => 2,
                _ => 3,
            }
        };
        for (limit, budgets) in cases {
            for digits in [&(|_| 1u8) as &dyn Fn(usize) -> u8, &splitting] {
                let pages = pages(&records, b"p/", limit, budgets, digits);
                assert!(pages.iter().all(|page| page.len() <= limit), "limit {limit} {budgets:?}");
                let keys: Vec<&String> = pages.iter().flatten().collect();
                let listed: BTreeSet<String> = keys.iter().map(|k| (*k).clone()).collect();
                assert_eq!(listed.len(), keys.len(), "limit {limit} {budgets:?}: a key twice");
                assert_eq!(listed, expected, "limit {limit} {budgets:?}");
            }
        }
        let everything = pages(&records, b"", 1000, Budgets::default(), |_| 2);
        assert_eq!(everything.iter().flatten().count(), 801, "all live keys, no prefix");
        assert_eq!(pages(&records, b"nothing", 10, Budgets::default(), |_| 1), vec![Vec::<String>::new()]);
    }

    #[test]
    fn a_page_refuses_answers_that_break_the_protocol() {
        let call = Call {
            partition: 3,
            digits: 1,
            from: Some(Position::new(vec![0x35])),
            limit: 2,
            max_bytes: 100,
            max_scan: 10,
        };
        let listed = |keys: &[&str], next: Option<&str>| ListedKeys {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            next: next.map(str::to_owned),
            scanned: 3,
            key_bytes: 2,
        };
        let cases = [
            (listed(&["a", "b"], Some("%36")), Ok(())),
            (listed(&[], None), Ok(())),
            (listed(&["a", "b", "c"], None), Err("answered 3 keys, 2 were asked for")),
            (listed(&[], Some("%35")), Err("a position outside partition 3")),
            (listed(&[], Some("%34%FF")), Err("a position outside partition 3")),
            (listed(&[], Some("%40")), Err("a position outside partition 3")),
            (listed(&[], Some("%zz")), Err("malformed position")),
        ];
        for (answer, expected) in cases {
            let mut page = Page::new(10, Position::new(vec![0x35]));
            let result = page.absorb(&call, answer.clone());
            match (&result, expected) {
                (Ok(()), Ok(())) => assert_eq!(page.calls(), 1),
                (Err(message), Err(expected)) => {
                    assert!(message.contains(expected), "{answer:?}: {message}");
                    assert_eq!((page.calls(), page.keys.len()), (0, 0), "a refused answer changes nothing");
                    assert_eq!(page.position, Some(Position::new(vec![0x35])));
                }
                _ => panic!("{answer:?}: {result:?}, expected {expected:?}"),
            }
        }
        let mut last = Page::new(10, Position::of_partition(15, 1));
        let call = last.next_call(1).unwrap();
        assert_eq!((call.partition, call.from.as_ref()), (15, None), "a partition's start is sent as none");
        last.absorb(&call, listed(&[], None)).unwrap();
        assert_eq!(last.next_call(1), None);
        assert_eq!(last.finish(b"").next, None, "the last partition listed: no cursor");
    }

    #[test]
    fn requests_are_read_strictly() {
        let cursor = encode_cursor(&Position::new(vec![0x42]), b"a/");
        let ok: &[(&str, &[u8], usize, Position)] = &[
            ("", b"", DEFAULT_LIMIT, Position::start()),
            ("prefix=a%2F&limit=1", b"a/", 1, Position::start()),
            ("limit=10000&prefix=%00%FF", b"\0\xff", MAX_LIMIT, Position::start()),
        ];
        for (raw, prefix, limit, from) in ok {
            let query = Query::parse(raw).unwrap();
            let request = ListRequest::parse(&query, 16).unwrap();
            assert_eq!((request.prefix, request.limit, &request.from), (*prefix, *limit, from), "{raw}");
        }
        let with_cursor = format!("prefix=a/&after={cursor}");
        let query = Query::parse(&with_cursor).unwrap();
        assert_eq!(ListRequest::parse(&query, 16).unwrap().from, Position::new(vec![0x42]));
        let bad = [
            ("limit=0".to_owned(), "`limit` must be 1 to 10000 (got 0)"),
            ("limit=10001".to_owned(), "`limit` must be 1 to 10000 (got 10001)"),
            ("limit=-1".to_owned(), "parameter `limit` must be a number"),
            ("after=xyz".to_owned(), "malformed cursor"),
            (format!("prefix=b/&after={cursor}"), "does not belong to this listing"),
            ("prefix=0123456789abcdefg".to_owned(), "prefix is 17 bytes; no key is longer than 16"),
        ];
        for (raw, message) in bad {
            let query = Query::parse(&raw).unwrap();
            let error = ListRequest::parse(&query, 16).unwrap_err().to_string();
            assert!(error.contains(message), "{raw}: {error}");
        }
    }
}
