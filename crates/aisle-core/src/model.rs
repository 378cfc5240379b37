//! The retail domain: products, users, interactions, queries and relevance judgments.
//!
//! Entities carry the retailer's external string ids; everything else refers to them by dense
//! indices ([`ProductId`], [`UserId`], [`QueryId`]) so that tables of millions of rows stay small.

use std::collections::HashMap;
use std::fmt;

use crate::taxonomy::NodeId;

macro_rules! dense_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);
        impl $name {
            /// The index as `usize`.
            #[inline]
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}

dense_id!(
    /// Index of a product in its [`Catalog`].
    ProductId
);
dense_id!(
    /// Index of a user in its [`Users`] table.
    UserId
);
dense_id!(
    /// Index of a distinct normalised query in its [`Queries`] table.
    QueryId
);

/// A product of the catalog.
#[derive(Clone, Debug, PartialEq)]
pub struct Product {
    /// The retailer's id (SKU).
    pub id: String,
    pub title: String,
    pub description: String,
    pub brand: String,
    pub price: Option<f32>,
    /// Ordered `(name, value)` pairs such as `("colour", "black")`.
    pub attributes: Vec<(String, String)>,
    /// The taxonomy node the product is filed under (usually a leaf).
    pub category: NodeId,
}

/// The products of a dataset, indexed by [`ProductId`] and by external id.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    products: Vec<Product>,
    by_id: HashMap<String, ProductId>,
}

impl Catalog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Catalog {
            products: Vec::with_capacity(n),
            by_id: HashMap::with_capacity(n),
        }
    }

    /// Adds a product; `Err` with the existing index when the id is taken.
    pub fn push(&mut self, product: Product) -> Result<ProductId, ProductId> {
        if let Some(&existing) = self.by_id.get(&product.id) {
            return Err(existing);
        }
        let id = ProductId(self.products.len() as u32);
        self.by_id.insert(product.id.clone(), id);
        self.products.push(product);
        Ok(id)
    }

    pub fn len(&self) -> usize {
        self.products.len()
    }

    pub fn is_empty(&self) -> bool {
        self.products.is_empty()
    }

    #[inline]
    pub fn get(&self, id: ProductId) -> &Product {
        &self.products[id.index()]
    }

    /// The product with this external id.
    pub fn find(&self, id: &str) -> Option<ProductId> {
        self.by_id.get(id).copied()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (ProductId, &Product)> {
        self.products
            .iter()
            .enumerate()
            .map(|(i, p)| (ProductId(i as u32), p))
    }

    pub fn products(&self) -> &[Product] {
        &self.products
    }
}

/// A customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    /// A coarse segment label, when the data has one.
    pub segment: Option<String>,
    /// Other demographic features as `(name, value)` pairs.
    pub demographics: Vec<(String, String)>,
}

/// The users of a dataset, indexed by [`UserId`] and by external id.
#[derive(Clone, Debug, Default)]
pub struct Users {
    users: Vec<User>,
    by_id: HashMap<String, UserId>,
}

impl Users {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a user; `Err` with the existing index when the id is taken.
    pub fn push(&mut self, user: User) -> Result<UserId, UserId> {
        if let Some(&existing) = self.by_id.get(&user.id) {
            return Err(existing);
        }
        let id = UserId(self.users.len() as u32);
        self.by_id.insert(user.id.clone(), id);
        self.users.push(user);
        Ok(id)
    }

    /// The user with this id, created without demographics when new.
    pub fn get_or_insert(&mut self, id: &str) -> UserId {
        if let Some(&u) = self.by_id.get(id) {
            return u;
        }
        let u = UserId(self.users.len() as u32);
        self.by_id.insert(id.to_owned(), u);
        self.users.push(User {
            id: id.to_owned(),
            segment: None,
            demographics: Vec::new(),
        });
        u
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    #[inline]
    pub fn get(&self, id: UserId) -> &User {
        &self.users[id.index()]
    }

    pub fn find(&self, id: &str) -> Option<UserId> {
        self.by_id.get(id).copied()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (UserId, &User)> {
        self.users
            .iter()
            .enumerate()
            .map(|(i, u)| (UserId(i as u32), u))
    }
}

/// Normalises a query for matching: Unicode lowercase, whitespace trimmed and collapsed.
///
/// "Gears of  War " and "gears of war" are the same query to every protocol and metric.
pub fn normalize_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        for c in word.chars() {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Distinct normalised queries, interned.
#[derive(Clone, Debug, Default)]
pub struct Queries {
    texts: Vec<String>,
    by_text: HashMap<String, QueryId>,
}

impl Queries {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of the normalised form of `text`, interned when new.
    pub fn intern(&mut self, text: &str) -> QueryId {
        let norm = normalize_query(text);
        if let Some(&q) = self.by_text.get(&norm) {
            return q;
        }
        let q = QueryId(self.texts.len() as u32);
        self.by_text.insert(norm.clone(), q);
        self.texts.push(norm);
        q
    }

    /// The id of `text` when some interaction or judgment used it.
    pub fn find(&self, text: &str) -> Option<QueryId> {
        self.by_text.get(&normalize_query(text)).copied()
    }

    /// The normalised text.
    #[inline]
    pub fn text(&self, q: QueryId) -> &str {
        &self.texts[q.index()]
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (QueryId, &str)> {
        self.texts
            .iter()
            .enumerate()
            .map(|(i, t)| (QueryId(i as u32), t.as_str()))
    }
}

/// What a user did with a product, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    View,
    Click,
    AddToCart,
    Purchase,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::View, Kind::Click, Kind::AddToCart, Kind::Purchase];

    /// The name used in files: `view`, `click`, `add_to_cart`, `purchase`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Click => "click",
            Kind::AddToCart => "add_to_cart",
            Kind::Purchase => "purchase",
        }
    }

    /// Parses a kind (case-insensitive), with the aliases docs/data-format.md lists: `impression`;
    /// `addtocart`, `cart`; `order`, `buy`.
    pub fn parse(s: &str) -> Option<Kind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "view" | "impression" => Some(Kind::View),
            "click" => Some(Kind::Click),
            "add_to_cart" | "addtocart" | "cart" => Some(Kind::AddToCart),
            "purchase" | "order" | "buy" => Some(Kind::Purchase),
            _ => None,
        }
    }

    /// The graded relevance this kind implies for an evaluation (1 click .. 3 purchase).
    pub fn grade(self) -> u8 {
        match self {
            Kind::View => 0,
            Kind::Click => 1,
            Kind::AddToCart => 2,
            Kind::Purchase => 3,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event: a user did something with a product, perhaps after a query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interaction {
    pub user: UserId,
    pub product: ProductId,
    pub kind: Kind,
    /// Orders the user's events: Unix seconds, or an order / event sequence number. Events that
    /// share a value (the lines of one order) happened together.
    pub time: i64,
    /// The order or search session the event belongs to, when known.
    pub session: Option<u64>,
    pub query: Option<QueryId>,
    /// The price paid or shown, when known.
    pub price: Option<f32>,
}

/// A graded relevance label: how well `product` answers `query` (0 = not relevant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judgment {
    pub query: QueryId,
    pub product: ProductId,
    pub relevance: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_normalised_and_interned() {
        let mut q = Queries::new();
        let a = q.intern("Gears of  War ");
        let b = q.intern("gears of war");
        assert_eq!(a, b);
        assert_eq!(q.text(a), "gears of war");
        assert_eq!(q.find("GEARS OF WAR"), Some(a));
        assert_eq!(normalize_query("  ÉCLAIR\tAu  Café "), "éclair au café");
    }

    #[test]
    fn kinds_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("Purchase"), Some(Kind::Purchase));
        assert_eq!(Kind::parse("wishlist"), None);
        assert!(Kind::Purchase > Kind::Click);
    }

    #[test]
    fn catalog_rejects_duplicate_ids() {
        let mut c = Catalog::new();
        let p = Product {
            id: "sku1".into(),
            title: "t".into(),
            description: String::new(),
            brand: String::new(),
            price: None,
            attributes: vec![],
            category: NodeId(0),
        };
        let first = c.push(p.clone()).expect("new id");
        assert_eq!(c.push(p), Err(first));
        assert_eq!(c.find("sku1"), Some(first));
    }
}
