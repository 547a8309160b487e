//! Tag lists and the catalog, sorted and paginated as the spec describes (`n`, `last`).

use oci::RepoName;

use crate::layout;
use crate::store::{Store, StoreError};

/// One page of a sorted listing; `more` says whether entries follow the last one returned.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

impl Page {
    /// Entries strictly after `last`, at most `n` of them.
    pub fn of(mut items: Vec<String>, n: Option<usize>, last: Option<&str>) -> Page {
        items.sort_unstable();
        items.dedup();
        let start = last.map_or(0, |last| items.partition_point(|i| i.as_str() <= last));
        let mut items = items.split_off(start);
        let more = n.is_some_and(|n| items.len() > n);
        if let Some(n) = n {
            items.truncate(n);
        }
        Page { items, more }
    }
}

impl Store {
    pub async fn tag_page(
        &self,
        name: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page, StoreError> {
        let tags = self.tags(name).await?;
        if tags.is_empty()
            && self
                .backend
                .list(&layout::manifests_dir(name))
                .await?
                .is_empty()
        {
            return Err(StoreError::NameUnknown);
        }
        let tags = tags.into_iter().map(|t| t.to_string()).collect();
        Ok(Page::of(tags, n, last))
    }

    pub async fn catalog_page(
        &self,
        n: Option<usize>,
        last: Option<&str>,
        visible: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Page, StoreError> {
        let mut repos = self.repository_dirs(&["_manifests"]).await?;
        repos.retain(|r| visible(r));
        Ok(Page::of(repos, n, last))
    }

    /// Whether any repository exists: tools that act on a registry's data (gc, fsck) refuse
    /// storage without any, which is more often a wrong root or bucket than an empty registry.
    pub async fn holds_repositories(&self) -> Result<bool, StoreError> {
        Ok(!self.backend.list(&layout::repositories()).await?.is_empty())
    }

    /// Names of the repository directories holding any of `markers` (`_manifests` for the
    /// catalog; garbage collection also wants repositories that only hold uploads or layers).
    /// Repositories nest (`a` and `a/b`).
    pub(crate) async fn repository_dirs(
        &self,
        markers: &[&str],
    ) -> Result<Vec<String>, StoreError> {
        let mut repos = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(dir) = pending.pop() {
            let key = if dir.is_empty() {
                layout::repositories()
            } else {
                format!("{}/{dir}", layout::repositories())
            };
            let mut marked = false;
            for child in self.backend.list(&key).await? {
                if markers.contains(&child.as_str()) {
                    marked = true;
                } else if !child.starts_with('_') {
                    let path = if dir.is_empty() {
                        child
                    } else {
                        format!("{dir}/{child}")
                    };
                    pending.push(path);
                }
            }
            if marked {
                repos.push(dir);
            }
        }
        repos.retain(|r| r.parse::<RepoName>().is_ok());
        Ok(repos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pagination() {
        let all = v(&["c", "a", "b", "d"]);
        assert_eq!(
            Page::of(all.clone(), None, None).items,
            v(&["a", "b", "c", "d"])
        );
        let p = Page::of(all.clone(), Some(2), None);
        assert_eq!((p.items, p.more), (v(&["a", "b"]), true));
        let p = Page::of(all.clone(), Some(2), Some("b"));
        assert_eq!((p.items, p.more), (v(&["c", "d"]), false));
        let p = Page::of(all.clone(), Some(0), None);
        assert_eq!((p.items, p.more), (v(&[]), true));
        assert_eq!(Page::of(all, None, Some("bb")).items, v(&["c", "d"]));
    }
}
