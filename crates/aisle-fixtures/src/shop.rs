//! The hand-built shop.

use aisle_core::{Catalog, Dataset, Interaction, Kind, Product, ProductId, TaxonomyBuilder};

/// One interaction of [`shop_with`]: the customer's id, the product's index (`p0`..`p5`), the
/// time, and its kind.
pub type ShopEvent<'a> = (&'a str, u32, i64, Kind);

/// Electronics > TV (`tv`) holds p0 "LG OLED", p1 "Samsung QLED", p2 "Sony Bravia" and
/// p3 "TCL Roku"; Home > Sofas (`sofa`) holds p4 "Grey corner sofa" and p5 "Leather sofa".
/// No customers, no interactions, no splits.
pub fn shop() -> Dataset {
    let mut b = TaxonomyBuilder::new();
    b.add_node("el", "Electronics", None, None);
    b.add_node("tv", "TV", Some("el"), None);
    b.add_node("home", "Home", None, None);
    b.add_node("sofa", "Sofas", Some("home"), None);
    let mut ds = Dataset::new("shop", b.build().expect("tree"));
    let mut catalog = Catalog::new();
    for (i, (leaf, title)) in [
        ("tv", "LG OLED"),
        ("tv", "Samsung QLED"),
        ("tv", "Sony Bravia"),
        ("tv", "TCL Roku"),
        ("sofa", "Grey corner sofa"),
        ("sofa", "Leather sofa"),
    ]
    .into_iter()
    .enumerate()
    {
        let category = ds.taxonomy.node(leaf).expect("leaf");
        catalog
            .push(Product {
                id: format!("p{i}"),
                title: title.into(),
                description: String::new(),
                brand: String::new(),
                price: None,
                attributes: vec![],
                category,
            })
            .expect("unique");
    }
    ds.catalog = catalog;
    ds
}

/// The [`shop`] with `events`, in their order (customers are added as they first appear), each
/// searched with `query` when there is one.
pub fn shop_with(events: &[ShopEvent], query: Option<&str>) -> Dataset {
    let mut ds = shop();
    for &(user, product, time, kind) in events {
        let user = ds.users.get_or_insert(user);
        let query = query.map(|q| ds.queries.intern(q));
        ds.interactions.push(Interaction {
            user,
            product: ProductId(product),
            kind,
            time,
            session: None,
            query,
            price: None,
        });
    }
    ds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shop_has_two_leaves_six_products_and_the_events() {
        let ds = shop_with(
            &[("u", 1, 1, Kind::Purchase), ("v", 4, 2, Kind::View)],
            Some("tv"),
        );
        assert_eq!(ds.catalog.len(), 6);
        let p4 = ds.catalog.get(ProductId(4));
        assert_eq!(ds.taxonomy.path_string(p4.category), "Home > Sofas");
        assert_eq!(ds.users.len(), 2);
        assert_eq!(ds.users.find("v"), Some(ds.interactions[1].user));
        assert_eq!(ds.interactions[1].kind, Kind::View);
        assert_eq!(ds.queries.text(ds.interactions[0].query.expect("q")), "tv");
    }
}
