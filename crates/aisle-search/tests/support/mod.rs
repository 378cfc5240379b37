pub mod qdrant_node;
