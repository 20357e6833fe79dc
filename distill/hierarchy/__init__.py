"""Hierarchies of tokens (DESIGN.md, idea 3): imposed groups from a file, or emergent ones clustered
from the teacher, each level tied to a prefix size; plus the character-level demonstration mode."""

from distill.hierarchy.config import HierarchyConfig, TokenizerMode
from distill.hierarchy.emergent import cluster_tree, emergent_hierarchy, spherical_kmeans
from distill.hierarchy.groups import CLASSES, GroupsFileError, load_groups, parse_groups
from distill.hierarchy.tree import Group, Hierarchy, Level, cohesion, typical

__all__ = ["CLASSES", "Group", "GroupsFileError", "Hierarchy", "HierarchyConfig", "Level", "TokenizerMode",
           "cluster_tree", "cohesion", "emergent_hierarchy", "load_groups", "parse_groups", "spherical_kmeans",
           "typical"]
