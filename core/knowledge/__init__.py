"""Knowledge bases: documents converted, chunked and indexed in SQL, searched, cited."""

from core.knowledge.convert import Document, DocumentError
from core.knowledge.index import KnowledgeIndex
from core.knowledge.search import Passage, Searcher
from core.knowledge.tool import KB_SEARCH_SCHEMA, kb_search

__all__ = ["KB_SEARCH_SCHEMA", "Document", "DocumentError", "KnowledgeIndex", "Passage",
           "Searcher", "kb_search"]
