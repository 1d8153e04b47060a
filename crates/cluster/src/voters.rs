//! The quorum a node is told to be part of (`--voters 1@HOST:PORT,2@HOST:PORT,...`) and the
//! identity its data directory remembers, so that a node never joins a cluster it was not
//! formatted for: voters lists that disagree, duplicate node ids or addresses, a node
//! missing from its own list, or a data directory of another node or cluster are refused
//! before anything is read or written.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::NodeId;

const IDENTITY: &str = "cluster.json";

/// Node id to cluster address.
pub type Voters = BTreeMap<NodeId, String>;

/// Parse `1@127.0.0.11:9192,2@127.0.0.12:9192,...` for node ME.
pub fn parse(list: &str, me: NodeId) -> Result<Voters, String> {
    let mut voters = Voters::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('@')
            .ok_or_else(|| format!("voter {item:?}: expected ID@HOST:PORT"))?;
        let id: NodeId = id
            .parse()
            .map_err(|_| format!("voter {item:?}: the node id must be a number"))?;
        if addr
            .rsplit_once(':')
            .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        {
            return Err(format!("voter {item:?}: expected ID@HOST:PORT"));
        }
        if voters.values().any(|a| a == addr) {
            return Err(format!("voters: address {addr} is given twice"));
        }
        if voters.insert(id, addr.to_string()).is_some() {
            return Err(format!("voters: node id {id} is given twice"));
        }
    }
    if voters.len() < 3 || voters.len().is_multiple_of(2) {
        return Err(format!(
            "voters: {} given; a quorum needs an odd number of at least 3 (3 or 5)",
            voters.len()
        ));
    }
    if !voters.contains_key(&me) {
        return Err(format!("voters: this node ({me}) is not in the list"));
    }
    Ok(voters)
}

/// What a data directory was formatted for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: NodeId,
    pub voters: Voters,
}

/// Check DIR against NODE_ID and VOTERS: the first start records them; later starts must
/// match exactly (a different list is another cluster, or a membership change, which is
/// not built yet).
pub fn check_identity(dir: &Path, node_id: NodeId, voters: &Voters) -> Result<(), String> {
    let path = dir.join(IDENTITY);
    let want = Identity {
        node_id,
        voters: voters.clone(),
    };
    match fs::read(&path) {
        Ok(bytes) => {
            let had: Identity = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: unreadable ({e})", path.display()))?;
            if had.node_id != node_id {
                return Err(format!(
                    "{} belongs to node {}, not {node_id}",
                    dir.display(),
                    had.node_id
                ));
            }
            if had.voters != *voters {
                return Err(format!(
                    "{} was formatted for voters {}, not {}",
                    dir.display(),
                    show(&had.voters),
                    show(voters)
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let bytes = serde_json::to_vec_pretty(&want).expect("an identity serializes");
            crate::log_store::replace_file(dir, IDENTITY, &bytes)
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn show(voters: &Voters) -> String {
    voters
        .iter()
        .map(|(id, a)| format!("{id}@{a}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: &str = "1@127.0.0.11:9192,2@127.0.0.12:9192,3@127.0.0.13:9192";

    #[test]
    fn voters_lists_are_checked() {
        assert_eq!(parse(THREE, 2).unwrap().len(), 3);
        let refused = [
            ("1@a:1,1@b:2,3@c:3", "node id 1 is given twice"),
            ("1@a:1,2@a:1,3@c:3", "address a:1 is given twice"),
            ("1@a:1,2@b:2", "an odd number of at least 3"),
            ("1@a:1,2@b:2,3@c:3,4@d:4", "an odd number of at least 3"),
            ("1@a:1,2@b:2,x@c:3", "must be a number"),
            ("1@a:1,2@b:2,3@c", "expected ID@HOST:PORT"),
            ("1@a:1,2@b:2,3:c:3", "expected ID@HOST:PORT"),
        ];
        for (list, why) in refused {
            let e = parse(list, 1).unwrap_err();
            assert!(e.contains(why), "{list}: {e}");
        }
        assert!(parse(THREE, 4)
            .unwrap_err()
            .contains("this node (4) is not in the list"));
    }

    #[test]
    fn a_data_directory_stays_with_its_node_and_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let voters = parse(THREE, 1).unwrap();
        check_identity(dir.path(), 1, &voters).unwrap();
        check_identity(dir.path(), 1, &voters).unwrap();
        assert!(check_identity(dir.path(), 2, &voters)
            .unwrap_err()
            .contains("belongs to node 1, not 2"));
        let other = parse("1@127.0.0.11:9192,2@127.0.0.12:9192,3@127.0.0.99:9192", 1).unwrap();
        assert!(check_identity(dir.path(), 1, &other)
            .unwrap_err()
            .contains("was formatted for voters"));
    }
}
