-- The bytes per object the previous layout (before migrations 0012-0014) would take for the
-- same rows, rebuilt beside the current tables of a bench_query database and measured, then
-- dropped. Run: psql -d bench_query -f bench/old_layout_sizes.sql
\set ON_ERROR_STOP on
SET maintenance_work_mem = '1GB';
DROP TABLE IF EXISTS old_lexicalterm, old_chunkembedding;
-- Postings: a bigint id (primary key), copies of the entry's object_id and language,
-- double precision frequency and impact, the covering index and the (entry, lexeme) index.
CREATE TABLE old_lexicalterm (
    id bigserial PRIMARY KEY, entry_id bigint NOT NULL, content_type_id integer NOT NULL,
    object_id varchar(255) NOT NULL, search_config varchar(64) NOT NULL,
    language varchar(16) NOT NULL, lexeme text NOT NULL, frequency double precision NOT NULL,
    impact double precision NOT NULL);
INSERT INTO old_lexicalterm (entry_id, content_type_id, object_id, search_config, language,
                             lexeme, frequency, impact)
SELECT p.entry_id, p.content_type_id, e.object_id, p.search_config, e.language, p.lexeme,
       p.frequency, p.impact
FROM semantic_search_lexicalterm p JOIN semantic_search_searchentry e ON e.id = p.entry_id
ORDER BY p.entry_id, p.lexeme;
CREATE INDEX old_term_cover ON old_lexicalterm (content_type_id, search_config, lexeme, impact DESC)
    INCLUDE (entry_id);
CREATE INDEX old_term_entry ON old_lexicalterm (entry_id, lexeme);
-- Chunks: float32 vectors and an HNSW index on vector::vector(384).
CREATE TABLE old_chunkembedding (LIKE semantic_search_chunkembedding INCLUDING DEFAULTS);
ALTER TABLE old_chunkembedding ALTER COLUMN vector TYPE vector USING vector::vector;
INSERT INTO old_chunkembedding SELECT * FROM semantic_search_chunkembedding;
ALTER TABLE old_chunkembedding ADD PRIMARY KEY (id);
CREATE UNIQUE INDEX ON old_chunkembedding (entry_id, embedder, embedder_version, chunk);
CREATE INDEX ON old_chunkembedding (embedder, embedder_version);
CREATE INDEX ON old_chunkembedding (entry_id);
CREATE INDEX ON old_chunkembedding USING hnsw ((vector::vector(384)) vector_cosine_ops);
VACUUM ANALYZE old_lexicalterm, old_chunkembedding;
SELECT relname, pg_size_pretty(pg_table_size(oid)) AS heap,
       pg_size_pretty(pg_indexes_size(oid)) AS indexes,
       pg_table_size(oid) + pg_indexes_size(oid) AS bytes
FROM pg_class WHERE relname IN ('old_lexicalterm', 'old_chunkembedding',
                                'semantic_search_lexicalterm', 'semantic_search_chunkembedding',
                                'semantic_search_searchentry')
ORDER BY relname;
SELECT pg_size_pretty(pg_relation_size('bench_naive_fts')) AS entries_gin_index,
       pg_relation_size('bench_naive_fts') AS gin_bytes;
DROP TABLE old_lexicalterm, old_chunkembedding;
