-- Every attribute of amebo's objects that an install defines, one row per object and attribute:
-- (object, attribute, value), by name (never by oid), newlines in values written as \n. Two
-- databases whose outputs are equal have the same amebo. Used by test/scripts/upgrade_compare.sh.
SET search_path = pg_catalog;

WITH schemas AS (
    SELECT oid, nspname FROM pg_namespace WHERE nspname IN ('amebo', 'amebo_internal')
),
members AS (
    SELECT d.classid, d.objid, d.objsubid FROM pg_depend d
    WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
      AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'amebo')
),
functions AS (
    SELECT p.*, p.oid::regprocedure::text AS name FROM pg_proc p JOIN schemas s ON s.oid = p.pronamespace
),
relations AS (
    SELECT c.*, c.oid::regclass::text AS name,
           CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'S' THEN 'sequence'
                          WHEN 'i' THEN 'index' ELSE 'relation' END || ' ' || c.oid::regclass::text
               AS object
    FROM pg_class c JOIN schemas s ON s.oid = c.relnamespace
),
rows (object, attribute, value) AS (
    -- Schemas: owner, privileges, comment.
    SELECT 'schema ' || s.nspname, 'owner', n.nspowner::regrole::text
    FROM schemas s JOIN pg_namespace n ON n.oid = s.oid
    UNION ALL SELECT 'schema ' || s.nspname, 'acl', n.nspacl::text
    FROM schemas s JOIN pg_namespace n ON n.oid = s.oid
    UNION ALL SELECT 'schema ' || s.nspname, 'comment', obj_description(s.oid, 'pg_namespace')
    FROM schemas s
    -- Functions: the whole definition, and each attribute on its own line as well.
    UNION ALL SELECT 'function ' || f.name, 'definition', pg_get_functiondef(f.oid) FROM functions f
    UNION ALL SELECT 'function ' || f.name, 'volatility', f.provolatile::text FROM functions f
    UNION ALL SELECT 'function ' || f.name, 'strict', f.proisstrict::text FROM functions f
    UNION ALL SELECT 'function ' || f.name, 'security definer', f.prosecdef::text FROM functions f
    UNION ALL SELECT 'function ' || f.name, 'parallel', f.proparallel::text FROM functions f
    UNION ALL SELECT 'function ' || f.name, 'config', f.proconfig::text FROM functions f
    UNION ALL SELECT 'function ' || f.name, 'cost and rows', f.procost || ' ' || f.prorows
    FROM functions f
    UNION ALL SELECT 'function ' || f.name, 'kind and language',
                     f.prokind::text || ' ' || (SELECT lanname FROM pg_language WHERE oid = f.prolang)
    FROM functions f
    UNION ALL SELECT 'function ' || f.name, 'result', pg_get_function_result(f.oid) FROM functions f
    UNION ALL SELECT 'function ' || f.name, 'arguments', pg_get_function_arguments(f.oid)
    FROM functions f
    UNION ALL SELECT 'function ' || f.name, 'owner', f.proowner::regrole::text FROM functions f
    UNION ALL SELECT 'function ' || f.name, 'acl', f.proacl::text FROM functions f
    UNION ALL SELECT 'function ' || f.name, 'comment', obj_description(f.oid, 'pg_proc')
    FROM functions f
    -- Tables, views, sequences, indexes: kind, owner, privileges, options, comment.
    UNION ALL SELECT r.object, 'owner', r.relowner::regrole::text FROM relations r
    UNION ALL SELECT r.object, 'acl', r.relacl::text FROM relations r
    UNION ALL SELECT r.object, 'persistence and options',
                     r.relpersistence::text || ' ' || coalesce(r.reloptions::text, '')
    FROM relations r
    UNION ALL SELECT r.object, 'comment', obj_description(r.oid, 'pg_class') FROM relations r
    UNION ALL SELECT r.object, 'view definition', pg_get_viewdef(r.oid)
    FROM relations r WHERE r.relkind = 'v'
    UNION ALL SELECT r.object, 'index definition', pg_get_indexdef(r.oid)
    FROM relations r WHERE r.relkind = 'i'
    -- Columns, in order, with type, NOT NULL, default, identity, collation, privileges.
    UNION ALL SELECT r.object, 'column ' || a.attnum || ' ' || a.attname,
                     format_type(a.atttypid, a.atttypmod)
                     || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                     || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '')
                     || CASE a.attidentity WHEN 'a' THEN ' identity always'
                                           WHEN 'd' THEN ' identity by default' ELSE '' END
                     || CASE WHEN a.attgenerated <> '' THEN ' generated' ELSE '' END
                     || coalesce(' collate ' || (SELECT collname FROM pg_collation
                                                 WHERE oid = a.attcollation
                                                   AND a.attcollation <> 100), '')
                     || coalesce(' acl ' || a.attacl::text, '')
                     || coalesce(' comment ' || col_description(r.oid, a.attnum), '')
    FROM relations r JOIN pg_attribute a ON a.attrelid = r.oid
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped AND r.relkind IN ('r', 'v')
    -- Constraints (primary and foreign keys, unique, check).
    UNION ALL SELECT r.object, 'constraint ' || c.conname, pg_get_constraintdef(c.oid)
    FROM relations r JOIN pg_constraint c ON c.conrelid = r.oid
    -- Triggers (not the internal ones of foreign keys).
    UNION ALL SELECT r.object, 'trigger ' || t.tgname, pg_get_triggerdef(t.oid)
    FROM relations r JOIN pg_trigger t ON t.tgrelid = r.oid WHERE NOT t.tgisinternal
    -- Sequences: type, bounds, increment, cache, cycle, and the column owning them.
    UNION ALL SELECT r.object, 'sequence',
                     format('%s start %s increment %s min %s max %s cache %s cycle %s',
                            s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
                            s.seqcache, s.seqcycle)
    FROM relations r JOIN pg_sequence s ON s.seqrelid = r.oid
    UNION ALL SELECT r.object, 'owned by',
                     d.refobjid::regclass::text || '.'
                     || (SELECT attname FROM pg_attribute
                         WHERE attrelid = d.refobjid AND attnum = d.refobjsubid) || ' ' || d.deptype::text
    FROM relations r JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = r.oid
    WHERE r.relkind = 'S' AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
    -- Extension membership, what pg_dump keeps of the tables, and the initial privileges
    -- pg_dump compares privileges with.
    UNION ALL SELECT 'extension amebo', 'member ' || pg_describe_object(m.classid, m.objid, m.objsubid),
                     'member'
    FROM members m
    UNION ALL SELECT 'extension amebo', 'dumped ' || c.config::regclass::text,
                     coalesce(c.condition, '(no condition)')
    FROM pg_extension e,
         unnest(e.extconfig, e.extcondition) AS c(config, condition)
    WHERE e.extname = 'amebo'
    UNION ALL SELECT 'extension amebo', 'version', extversion FROM pg_extension WHERE extname = 'amebo'
    UNION ALL SELECT 'extension amebo',
                     'initial privileges ' || pg_describe_object(i.classoid, i.objoid, i.objsubid),
                     i.privtype::text || ' ' || i.initprivs::text
    FROM pg_init_privs i JOIN members m ON m.classid = i.classoid AND m.objid = i.objoid
)
SELECT object, attribute, replace(coalesce(value, '(null)'), E'\n', '\n')
FROM rows ORDER BY object, attribute;
