//! Tag lists and the catalog, sorted and paginated as the spec describes (`n`, `last`).

use oci::RepoName;

use crate::backend::Backend;
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

    /// One page of the catalog in distribution's order (path components compared one by one,
    /// so `a`, `a/b`, `a-b`), at most `n` names strictly after `last` that `visible` admits.
    /// The walk resumes at `last` and stops once the page is full: a page costs storage reads
    /// in proportion to its size (two listings per repository it passes, one per page of a
    /// large directory), not to the number of repositories.
    pub async fn catalog_page(
        &self,
        n: Option<usize>,
        last: Option<&str>,
        visible: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Page, StoreError> {
        let mut walk = CatalogWalk::resuming_after(last);
        let mut items = Vec::new();
        // One more than asked says whether another page follows.
        while n.is_none_or(|n| items.len() <= n) {
            match walk.next(&*self.backend).await? {
                Some(repo) if visible(&repo) => items.push(repo),
                Some(_) => {}
                None => break,
            }
        }
        let more = n.is_some_and(|n| items.len() > n);
        if let Some(n) = n {
            items.truncate(n);
        }
        Ok(Page { items, more })
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

/// Names read per listing of one directory of the repository tree.
const DIR_PAGE: usize = 256;

/// A depth-first walk of the repository tree in distribution's catalog order, from a resume
/// point; each directory is listed a page at a time.
struct CatalogWalk {
    /// The directories being walked, innermost last.
    stack: Vec<DirWalk>,
}

struct DirWalk {
    /// The repository path of this directory ("" for the root).
    path: String,
    /// Children already walked end here (exclusive start of the next listing page).
    after: Option<String>,
    queued: std::collections::VecDeque<String>,
    exhausted: bool,
}

impl DirWalk {
    fn new(path: String, after: Option<String>) -> DirWalk {
        DirWalk {
            path,
            after,
            queued: Default::default(),
            exhausted: false,
        }
    }

    fn child(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.path)
        }
    }
}

impl CatalogWalk {
    /// Every repository after `last`: the subtree under `last` comes first, then, from the
    /// innermost directory outwards, the siblings after each component of `last`.
    fn resuming_after(last: Option<&str>) -> CatalogWalk {
        let Some(last) = last.filter(|l| !l.is_empty()) else {
            return CatalogWalk {
                stack: vec![DirWalk::new(String::new(), None)],
            };
        };
        let mut stack = Vec::new();
        let mut dir = String::new();
        for component in last.split('/') {
            stack.push(DirWalk::new(dir.clone(), Some(component.to_owned())));
            dir = if dir.is_empty() {
                component.to_owned()
            } else {
                format!("{dir}/{component}")
            };
        }
        stack.push(DirWalk::new(dir, None));
        CatalogWalk { stack }
    }

    /// The next repository in order, or None at the end.
    async fn next(&mut self, backend: &dyn Backend) -> Result<Option<String>, StoreError> {
        loop {
            let Some(dir) = self.stack.last_mut() else {
                return Ok(None);
            };
            if dir.queued.is_empty() && !dir.exhausted {
                let names = backend
                    .list_page(&repository_key(&dir.path), dir.after.as_deref(), DIR_PAGE)
                    .await?;
                dir.exhausted = names.len() < DIR_PAGE;
                dir.after = names.last().cloned().or(dir.after.take());
                // `_manifests`, `_layers`, `_uploads` mark a repository; they are not children.
                dir.queued
                    .extend(names.into_iter().filter(|n| !n.starts_with('_')));
            }
            let Some(name) = dir.queued.pop_front() else {
                self.stack.pop();
                continue;
            };
            let path = dir.child(&name);
            let is_repository = !backend
                .list_page(&format!("{}/_manifests", repository_key(&path)), None, 1)
                .await?
                .is_empty();
            self.stack.push(DirWalk::new(path.clone(), None));
            if is_repository && path.parse::<RepoName>().is_ok() {
                return Ok(Some(path));
            }
        }
    }
}

fn repository_key(path: &str) -> String {
    if path.is_empty() {
        layout::repositories()
    } else {
        format!("{}/{path}", layout::repositories())
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

#[cfg(test)]
mod walk_cost {
    use std::collections::{BTreeMap, BTreeSet};
    use std::ops::Range;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::CatalogWalk;
    use crate::backend::{Appended, Appender, Backend, BackendError, ByteStream, Claim};
    use crate::layout;

    /// A directory tree that only lists, counting its listings.
    struct Tree {
        dirs: BTreeMap<String, BTreeSet<String>>,
        listings: AtomicUsize,
    }

    impl Tree {
        fn of(repos: &[String]) -> Tree {
            let mut dirs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for repo in repos {
                let mut dir = layout::repositories();
                for part in repo.split('/') {
                    dirs.entry(dir.clone()).or_default().insert(part.to_owned());
                    dir = format!("{dir}/{part}");
                }
                dirs.entry(dir.clone())
                    .or_default()
                    .insert("_manifests".into());
                dirs.entry(format!("{dir}/_manifests"))
                    .or_default()
                    .insert("tags".into());
            }
            Tree {
                dirs,
                listings: AtomicUsize::new(0),
            }
        }
    }

    #[async_trait]
    impl Backend for Tree {
        async fn list(&self, prefix: &str) -> Result<Vec<String>, BackendError> {
            self.listings.fetch_add(1, Ordering::Relaxed);
            Ok(self
                .dirs
                .get(prefix)
                .into_iter()
                .flatten()
                .cloned()
                .collect())
        }
        async fn size(&self, _: &str) -> Result<u64, BackendError> {
            unreachable!("the catalog walk only lists")
        }
        async fn modified(&self, _: &str) -> Result<std::time::SystemTime, BackendError> {
            unreachable!("the catalog walk only lists")
        }
        async fn touch(&self, _: &str) -> Result<(), BackendError> {
            unreachable!("the catalog walk only lists")
        }
        async fn create_empty(&self, _: &str) -> Result<(), BackendError> {
            unreachable!("the catalog walk only lists")
        }
        async fn claim(&self, _: &str) -> Result<Box<dyn Claim>, BackendError> {
            unreachable!("the catalog walk only lists")
        }
        async fn get(&self, _: &str, _: Option<Range<u64>>) -> Result<ByteStream, BackendError> {
            unreachable!("the catalog walk only lists")
        }
        async fn read(&self, _: &str, _: u64) -> Result<Bytes, BackendError> {
            unreachable!("the catalog walk only lists")
        }
        async fn put(&self, _: &str, _: Bytes) -> Result<(), BackendError> {
            unreachable!("the catalog walk only lists")
        }
        async fn delete(&self, _: &str) -> Result<(), BackendError> {
            unreachable!("the catalog walk only lists")
        }
        async fn delete_prefix(&self, _: &str) -> Result<(), BackendError> {
            unreachable!("the catalog walk only lists")
        }
        async fn append(&self, _: &str, _: u64) -> Result<Box<dyn Appender>, BackendError> {
            unreachable!("the catalog walk only lists")
        }
        async fn appended(&self, _: &str) -> Result<Appended, BackendError> {
            unreachable!("the catalog walk only lists")
        }
        async fn commit(&self, _: &str, _: &str) -> Result<(), BackendError> {
            unreachable!("the catalog walk only lists")
        }
        async fn rename(&self, _: &str, _: &str) -> Result<(), BackendError> {
            unreachable!("the catalog walk only lists")
        }
        async fn abort(&self, _: &str) -> Result<(), BackendError> {
            unreachable!("the catalog walk only lists")
        }
    }

    async fn page(tree: &Tree, last: Option<&str>, n: usize) -> Vec<String> {
        let mut walk = CatalogWalk::resuming_after(last);
        let mut out = Vec::new();
        while out.len() < n {
            match walk.next(tree).await.unwrap() {
                Some(repo) => out.push(repo),
                None => break,
            }
        }
        out
    }

    #[tokio::test]
    async fn a_page_costs_listings_in_proportion_to_its_size_not_to_the_catalog() {
        let mut repos: Vec<String> = (0..5000).map(|i| format!("app{i:05}")).collect();
        repos.extend((0..50).map(|i| format!("team/svc{i:02}")));
        let tree = Tree::of(&repos);
        let first = page(&tree, None, 50).await;
        assert_eq!(first, repos[..50]);
        // Two listings per repository passed (its marker, its children) and one per page of
        // the directories on the way; the catalog has 5,050 repositories.
        let cost = tree.listings.swap(0, Ordering::Relaxed);
        assert!(cost <= 2 * 50 + 2, "first page: {cost} listings");
        let middle = page(&tree, Some("app02999"), 50).await;
        assert_eq!(middle, repos[3000..3050]);
        let cost = tree.listings.swap(0, Ordering::Relaxed);
        assert!(cost <= 2 * 50 + 2, "resumed page: {cost} listings");
        let nested = page(&tree, Some("team/svc10"), 5).await;
        assert_eq!(nested, repos[5011..5016]);
        let cost = tree.listings.swap(0, Ordering::Relaxed);
        assert!(cost <= 2 * 5 + 3, "nested page: {cost} listings");
    }
}
