//! The synthetic retail world: a seeded generator of a retailer with its catalog, customers,
//! search logs and purchase histories, and the ground truth they were drawn from.
//!
//! * **Taxonomy.** A built-in, hand-written retail tree (10 departments, depth 4-5, about 480
//!   leaves: Electronics > TV & Video > Televisions > OLED TVs, ..., Clothing, Shoes &
//!   Accessories > Kids' Clothing > Girls' Clothing > Girls' Everyday Clothing > Girls' Dresses),
//!   or Best Buy's 4,723-node tree read from `categories.json` ([`TaxonomySource::BestBuy`]).
//!   Each leaf has a product type (title noun, query nouns) and a vocabulary family: brands with a
//!   price tier, colours (or flavours, scents), materials, sizes, features, a price range.
//! * **Catalog.** Products are spread over the leaves with a Zipf-like skew (leaf weight
//!   1/rank^0.9) and made in variant groups: one brand and product line in several sizes and
//!   colours, so that siblings differ in subtle attributes and model numbers ("Samsung QN55Q80C
//!   55 inch 4K UHD Smart QLED TV, Titan Black" next to the 65 inch one).
//! * **Customers.** A segment (budget, value, mainstream, premium, family, tech, outdoor, home,
//!   style), an age band and a region; latent: 2-4 category affinities (departments or their
//!   children), 2-3 preferred brands, a price band.
//! * **Search sessions.** The customer picks an intent leaf (from the affinities with probability
//!   0.75, else a popular leaf) and a target product (by preference), and types a broad ("tv"),
//!   medium ("samsung tv", "55 inch tv") or specific ("samsung 55 inch qled tv", "samsung
//!   qn55q80c") query, with occasional typos and dropped words. Clicks (1-6), an add to cart and
//!   a purchase fall on results by relevance x preference (brand, brand tier, price band).
//!   Purchases without a query (repeat buys) come before some sessions, so personalization has
//!   history.
//! * **Judgments.** Graded relevance for up to 5,000 distinct queries, up to 50 products each:
//!   3 = in a leaf the query's noun names and matching every attribute of the query, 2 = some of
//!   them, 1 = none of them or a sibling leaf. See [`GroundTruth::relevance`].
//!
//! Interactions per search session average [`INTERACTIONS_PER_SESSION`] (clicks, carts, purchases
//! and the repeat buys before sessions): ask [`SynthConfig::sessions_for_interactions`] for the
//! number of sessions that yields a target number of interactions.
//!
//! [`respond()`] simulates what a session's customer does with a ranked list another system shows
//! (clicks, cart, purchase) from the same latent model, for simulated A/B tests: its figures are
//! simulations, never live ones.
//!
//! The same [`SynthConfig`] always gives the same world, on any machine. The generator is single
//! threaded: 1M products and 10M interactions take well under two minutes on two cores.

mod catalog;
mod generated;
pub mod respond;
mod sim;
mod tree;
mod vocab;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::io::generic::{write_atomically, write_dir};
use crate::model::{ProductId, QueryId, UserId};
use crate::taxonomy::{NodeId, Taxonomy};

pub use generated::{bench, generate_into, Generated};
pub use respond::{
    examination_probability, respond, session_of, session_rng, Response, DEFAULT_DEPTH,
    EXAMINATION_DECAY, OUTSIDE_OPTION,
};
pub use sim::START_TIME;

/// The generic names of the four attribute slots of [`ProductTruth::attrs`] and
/// [`Constraints::attrs`]. Products show them under their family's own label ("screen size",
/// "flavour", "scent", ...), in `Product::attributes`.
pub const SLOTS: [&str; 4] = ["colour", "material", "size", "feature"];

/// Average interactions per search session, repeat purchases included (measured on 1M sessions
/// of the built-in world: 2.16 clicks, 0.52 add to cart, 0.36 purchases, 0.13 repeat buys).
pub const INTERACTIONS_PER_SESSION: f64 = 3.17;

/// Where the taxonomy comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TaxonomySource {
    /// The hand-written retail tree (no download).
    #[default]
    BuiltIn,
    /// Best Buy's category tree: the path of `categories.json`
    /// (`../shared/data/bestbuy_categories/categories.json`).
    BestBuy(PathBuf),
}

/// Settings of the generator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthConfig {
    /// Products in the catalog (1 to 5,000,000).
    pub products: usize,
    /// Customers (1 to 10,000,000).
    pub users: usize,
    /// Search sessions (0 to 20,000,000); see [`INTERACTIONS_PER_SESSION`].
    pub sessions: usize,
    pub seed: u64,
    pub taxonomy: TaxonomySource,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            products: 10_000,
            users: 2_000,
            sessions: 40_000,
            seed: 42,
            taxonomy: TaxonomySource::BuiltIn,
        }
    }
}

impl SynthConfig {
    pub const MAX_PRODUCTS: usize = 5_000_000;
    pub const MAX_USERS: usize = 10_000_000;
    pub const MAX_SESSIONS: usize = 20_000_000;

    /// Checks the sizes, with a message that says which setting is wrong and what is allowed.
    pub fn validate(&self) -> Result<()> {
        let check = |name: &str, v: usize, lo: usize, hi: usize| {
            if v < lo || v > hi {
                Err(Error::Config(format!(
                    "synthetic world: {name} must be between {lo} and {hi}, got {v}"
                )))
            } else {
                Ok(())
            }
        };
        check("products", self.products, 1, Self::MAX_PRODUCTS)?;
        check("users", self.users, 1, Self::MAX_USERS)?;
        check("sessions", self.sessions, 0, Self::MAX_SESSIONS)?;
        if let TaxonomySource::BestBuy(p) = &self.taxonomy {
            if !p.is_file() {
                return Err(Error::Config(format!(
                    "synthetic world: Best Buy taxonomy {} is not a file (expected \
                     ../shared/data/bestbuy_categories/categories.json)",
                    p.display()
                )));
            }
        }
        Ok(())
    }

    /// The number of search sessions that gives about `interactions` interactions.
    pub fn sessions_for_interactions(interactions: usize) -> usize {
        (interactions as f64 / INTERACTIONS_PER_SESSION).ceil() as usize
    }
}

/// A generated world: the dataset and what it was drawn from.
#[derive(Clone, Debug)]
pub struct World {
    pub dataset: Dataset,
    pub truth: GroundTruth,
}

/// A customer's price band.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PriceBand {
    /// Prefers the lower 40% of a category's price range and budget brands.
    Budget,
    Mid,
    /// Prefers the upper 40% and premium brands.
    Premium,
}

/// How much a query says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Specificity {
    /// A product type only: "tv", "qled tv".
    Broad,
    /// A product type and one attribute or the brand: "samsung tv", "55 inch tv".
    Medium,
    /// Brand and one or two attributes, or brand and model: "samsung 55 inch qled tv".
    Specific,
}

/// The latent attributes of a product (vocabulary ids index [`GroundTruth::vocab`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProductTruth {
    /// The leaf category (equal to `Product::category`).
    pub leaf: NodeId,
    pub brand: u32,
    /// Brand tier: 0 budget, 1 mainstream, 2 premium.
    pub tier: u8,
    /// Variant group: products of one brand and line that differ only in size and colour.
    pub group: u32,
    /// Colour, material, size, feature (see [`SLOTS`]); `None` where the family has none.
    pub attrs: [Option<u32>; 4],
    /// Position of the price in the category's price range, 0 (cheapest) to 1.
    pub price_position: f32,
    /// Popularity weight (lognormal); sessions draw products in proportion to it.
    pub popularity: f32,
}

/// A customer's latent preferences.
#[derive(Clone, Debug, PartialEq)]
pub struct UserTruth {
    pub segment: String,
    /// Vocabulary ids of 2-3 brands the customer prefers (4x in every choice).
    pub preferred_brands: Vec<u32>,
    pub price_band: PriceBand,
    /// Category subtrees (departments or their children) with weights summing to 1.
    pub affinities: Vec<(NodeId, f32)>,
}

/// The attributes a query asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Constraints {
    pub brand: Option<u32>,
    /// Colour, material, size, feature (see [`SLOTS`]).
    pub attrs: [Option<u32>; 4],
    /// A model number names one product.
    pub model: Option<ProductId>,
}

/// What a query means: the leaves its product noun names and the attributes it asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuerySpec {
    /// Index into [`GroundTruth::scopes`].
    pub scope: u32,
    pub constraints: Constraints,
}

/// The leaves a query noun names ("tv": every leaf whose product type is a TV), and their parents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub noun: String,
    /// Sorted.
    pub leaves: Vec<NodeId>,
    /// Parents of `leaves` other than the root, sorted.
    pub parents: Vec<NodeId>,
}

/// One search session as it was meant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SessionTruth {
    /// The `session` of its interactions (sessions are numbered in time order).
    pub id: u64,
    pub user: UserId,
    /// Unix seconds.
    pub start: i64,
    /// The leaf the customer had in mind.
    pub intent: NodeId,
    /// Whether the intent came from the customer's affinities (else from overall popularity).
    pub from_affinity: bool,
    pub specificity: Specificity,
    /// The product the customer had in mind (the query describes it).
    pub target: ProductId,
    /// What the query asks, typos aside.
    pub spec: QuerySpec,
    pub query: QueryId,
    pub purchased: Option<ProductId>,
}

/// What the world was drawn from.
#[derive(Clone, Debug)]
pub struct GroundTruth {
    pub seed: u64,
    /// Brands and attribute values, by id.
    pub vocab: Vec<String>,
    /// Indexed by `ProductId`.
    pub products: Vec<ProductTruth>,
    /// Indexed by `UserId`.
    pub users: Vec<UserTruth>,
    /// In time order; `sessions[i].id == i` when every session found a product.
    pub sessions: Vec<SessionTruth>,
    pub scopes: Vec<Scope>,
    /// For each `QueryId` of the dataset, the index in `sessions` of the first session that
    /// asked it.
    pub query_session: Vec<u32>,
}

impl GroundTruth {
    /// The string of a vocabulary id.
    pub fn value(&self, id: u32) -> &str {
        self.vocab
            .get(id as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// What a query of the dataset means (the first session that asked it).
    pub fn query_spec(&self, q: QueryId) -> Option<&QuerySpec> {
        let s = *self.query_session.get(q.index())?;
        self.sessions.get(s as usize).map(|s| &s.spec)
    }

    /// Graded relevance of a product for a query: 3 when the product is in one of the leaves the
    /// query's noun names and matches every attribute the query asks (brand, colour, material,
    /// size, feature, model); 2 in such a leaf matching some of them; 1 in such a leaf matching
    /// none, or in a sibling leaf (a child of a parent of the scope's leaves); 0 otherwise.
    pub fn relevance(&self, taxonomy: &Taxonomy, spec: &QuerySpec, product: ProductId) -> u8 {
        let (Some(scope), Some(p)) = (
            self.scopes.get(spec.scope as usize),
            self.products.get(product.index()),
        ) else {
            return 0;
        };
        sim::grade(scope, spec, p, product.0, |n| {
            taxonomy.parent(n).unwrap_or(taxonomy.root())
        })
    }

    /// How much a customer likes a product regardless of the query (the simulator's weight:
    /// 4x for a preferred brand, x0.5-1.6 for the brand tier against the price band, and a price
    /// fit around the band's centre).
    pub fn preference(&self, user: UserId, product: ProductId) -> f64 {
        match (
            self.users.get(user.index()),
            self.products.get(product.index()),
        ) {
            (Some(u), Some(p)) => sim::preference(u, p),
            _ => 0.0,
        }
    }
}

/// Generates the world for `cfg`.
pub fn generate(cfg: &SynthConfig) -> Result<World> {
    cfg.validate()?;
    let shop = match &cfg.taxonomy {
        TaxonomySource::BuiltIn => tree::built_in()?,
        TaxonomySource::BestBuy(path) => tree::best_buy(path)?,
    };
    let mut vocab = catalog::Vocab::default();
    let fams = catalog::families(&mut vocab)?;
    let (cat, products, index) = catalog::generate(&shop, &fams, &vocab, cfg.products, cfg.seed)?;
    let ctx = sim::Ctx::new(&shop, &fams, &vocab, &products, &cat, &index);
    let (users, user_truth) = sim::users(&ctx, cfg.users, cfg.seed);
    let mut queries = crate::model::Queries::new();
    let behaviour = sim::sessions(&ctx, &user_truth, &mut queries, cfg.sessions, cfg.seed);
    let judgments = sim::judgments(&ctx, &behaviour, cfg.seed);
    let scopes = ctx.scopes;

    let source = match &cfg.taxonomy {
        TaxonomySource::BuiltIn => "the built-in retail taxonomy".to_owned(),
        TaxonomySource::BestBuy(p) => format!("the Best Buy category tree ({})", p.display()),
    };
    let n_leaves = shop.leaves.len();
    let mut ds = Dataset::new("synthetic", shop.taxonomy);
    ds.catalog = cat;
    for u in users {
        ds.users
            .push(u)
            .map_err(|_| Error::Config("synthetic world: user id generated twice".into()))?;
    }
    ds.queries = queries;
    ds.interactions = behaviour.interactions;
    ds.judgments = judgments;
    ds.notes.push(format!(
        "synthetic retail world (seed {}): {} products over {} leaf categories of {source}, {} \
         customers, {} search sessions; queries, clicks, carts and purchases are simulated from \
         latent customer preferences",
        cfg.seed, cfg.products, n_leaves, cfg.users, cfg.sessions
    ));
    ds.notes.push(
        "synthetic judgments: graded by construction (3 = right product type and every queried \
         attribute, 2 = some attributes, 1 = right type or sibling category)"
            .to_owned(),
    );
    let truth = GroundTruth {
        seed: cfg.seed,
        vocab: vocab.strings,
        products,
        users: user_truth,
        sessions: behaviour.sessions,
        scopes,
        query_session: behaviour.query_session,
    };
    Ok(World { dataset: ds, truth })
}

/// The embedded default dataset `synthetic`: [`SynthConfig::default`] on the built-in taxonomy.
pub fn default_world() -> Result<World> {
    generate(&SynthConfig::default())
}

/// A small world on the built-in taxonomy with its default splits (event and query-disjoint),
/// for tests and examples that need real-looking data in a fraction of a second.
pub fn small_dataset(products: usize, users: usize, sessions: usize, seed: u64) -> Result<Dataset> {
    let mut ds = generate(&SynthConfig {
        products,
        users,
        sessions,
        seed,
        taxonomy: TaxonomySource::BuiltIn,
    })?
    .dataset;
    crate::split::add_default_splits(&mut ds, seed)?;
    Ok(ds)
}

fn io_err(e: serde_json::Error) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

#[derive(Serialize)]
struct UserRow<'a> {
    user: &'a str,
    segment: &'a str,
    price_band: PriceBand,
    preferred_brands: Vec<&'a str>,
    affinities: Vec<AffinityRow<'a>>,
}

#[derive(Serialize)]
struct AffinityRow<'a> {
    category: &'a str,
    name: &'a str,
    weight: f32,
}

#[derive(Serialize, Default)]
struct ConstraintRow<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    brand: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    colour: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    material: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    feature: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
}

#[derive(Serialize)]
struct SessionRow<'a> {
    session: u64,
    user: &'a str,
    time: i64,
    query: &'a str,
    specificity: Specificity,
    intent: &'a str,
    from_affinity: bool,
    scope: u32,
    target: &'a str,
    constraints: ConstraintRow<'a>,
    purchased: Option<&'a str>,
}

#[derive(Serialize)]
struct ScopeRow<'a> {
    scope: usize,
    noun: &'a str,
    leaves: Vec<&'a str>,
}

/// Writes the dataset in the generic format (`dir/taxonomy.csv`, `products.csv`, ...) and the
/// ground truth under `dir/truth/`: `world.json` (settings and counts), `users.jsonl` (latent
/// preferences), `sessions.jsonl` (each session's intent, target and query meaning),
/// `scopes.jsonl` (the leaves each query noun names) and `products.csv` (brand tier, variant
/// group, price position and popularity of each product).
pub fn write_world(world: &World, dir: &Path) -> Result<()> {
    let ds = &world.dataset;
    let truth = &world.truth;
    write_dir(ds, dir)?;
    let tdir = dir.join("truth");
    std::fs::create_dir_all(&tdir).map_err(|e| Error::io(&tdir, e))?;
    let t = &ds.taxonomy;
    let v = |id: u32| truth.value(id);

    let count = |k: crate::model::Kind| ds.interactions.iter().filter(|e| e.kind == k).count();
    let summary = serde_json::json!({
        "generator": "aisle synth",
        "seed": truth.seed,
        "products": ds.catalog.len(),
        "users": ds.users.len(),
        "sessions": truth.sessions.len(),
        "queries": ds.queries.len(),
        "interactions": ds.interactions.len(),
        "clicks": count(crate::model::Kind::Click),
        "add_to_carts": count(crate::model::Kind::AddToCart),
        "purchases": count(crate::model::Kind::Purchase),
        "judgments": ds.judgments.len(),
        "taxonomy_nodes": t.len(),
        "notes": ds.notes,
        "relevance": "3: in a leaf the query noun names and matching every queried attribute; 2: some of them; 1: none of them, or a sibling leaf; 0: otherwise",
    });
    write_atomically(&tdir.join("world.json"), |w| {
        serde_json::to_writer_pretty(&mut *w, &summary).map_err(io_err)?;
        w.write_all(b"\n")
    })?;

    write_atomically(&tdir.join("users.jsonl"), |w| {
        for (i, u) in truth.users.iter().enumerate() {
            let row = UserRow {
                user: &ds.users.get(UserId(i as u32)).id,
                segment: &u.segment,
                price_band: u.price_band,
                preferred_brands: u.preferred_brands.iter().map(|&b| v(b)).collect(),
                affinities: u
                    .affinities
                    .iter()
                    .map(|&(n, weight)| AffinityRow {
                        category: t.id(n),
                        name: t.name(n),
                        weight,
                    })
                    .collect(),
            };
            serde_json::to_writer(&mut *w, &row).map_err(io_err)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;

    write_atomically(&tdir.join("sessions.jsonl"), |w| {
        for s in &truth.sessions {
            let c = &s.spec.constraints;
            let a = |i: usize| c.attrs[i].map(v);
            let row = SessionRow {
                session: s.id,
                user: &ds.users.get(s.user).id,
                time: s.start,
                query: ds.queries.text(s.query),
                specificity: s.specificity,
                intent: t.id(s.intent),
                from_affinity: s.from_affinity,
                scope: s.spec.scope,
                target: &ds.catalog.get(s.target).id,
                constraints: ConstraintRow {
                    brand: c.brand.map(v),
                    colour: a(0),
                    material: a(1),
                    size: a(2),
                    feature: a(3),
                    model: c.model.map(|m| {
                        ds.catalog
                            .get(m)
                            .attributes
                            .iter()
                            .rev()
                            .find(|(k, _)| k == "model")
                            .map(|(_, m)| m.as_str())
                            .unwrap_or("")
                    }),
                },
                purchased: s.purchased.map(|p| ds.catalog.get(p).id.as_str()),
            };
            serde_json::to_writer(&mut *w, &row).map_err(io_err)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;

    write_atomically(&tdir.join("scopes.jsonl"), |w| {
        for (i, s) in truth.scopes.iter().enumerate() {
            let row = ScopeRow {
                scope: i,
                noun: &s.noun,
                leaves: s.leaves.iter().map(|&n| t.id(n)).collect(),
            };
            serde_json::to_writer(&mut *w, &row).map_err(io_err)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;

    write_atomically(&tdir.join("products.csv"), |w| {
        writeln!(w, "id,tier,group,price_position,popularity")?;
        for (i, p) in truth.products.iter().enumerate() {
            writeln!(
                w,
                "{},{},{},{:.4},{:.4}",
                ds.catalog.get(ProductId(i as u32)).id,
                p.tier,
                p.group,
                p.price_position,
                p.popularity
            )?;
        }
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests;
