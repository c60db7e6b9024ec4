# Included by _nodes.pyx: a node's names (its newest path and the older names
# of a hard-linked file) as owned C strings, and small helpers on them.

cdef void _make_newest(Node *n, const char *path) noexcept nogil:
    """``path`` becomes ``n``'s newest name (added if new); the others keep their order."""
    cdef uint32_t i, k
    cdef char *s
    if strcmp(n.path, path) == 0:
        return
    for i in range(n.nlinks):
        if strcmp(n.links[i], path) == 0:
            s = n.links[i]
            k = i
            while k > 0:
                n.links[k] = n.links[k - 1]
                k -= 1
            n.links[0] = n.path
            n.path = s
            return
    s = _dup(path)
    cdef char **links = <char **>realloc(n.links, (n.nlinks + 1) * sizeof(char *))
    if s == NULL or links == NULL:
        free(s)
        if links != NULL:
            n.links = links
        return
    n.links = links
    k = n.nlinks
    while k > 0:
        n.links[k] = n.links[k - 1]
        k -= 1
    n.links[0] = n.path
    n.path = s
    n.nlinks += 1

cdef bint _drop_name(Node *n, const char *path) noexcept nogil:
    """Remove ``path`` from ``n``'s names; False (nothing changed) if it was the only one."""
    cdef uint32_t i
    cdef char *gone
    if strcmp(n.path, path) == 0:
        if n.nlinks == 0:
            return False
        gone = n.path
        n.path = n.links[0]
        i = 0
    else:
        for i in range(n.nlinks):
            if strcmp(n.links[i], path) == 0:
                break
        else:
            return True
        gone = n.links[i]
    while i + 1 < n.nlinks:
        n.links[i] = n.links[i + 1]
        i += 1
    n.nlinks -= 1
    if n.nlinks == 0:
        free(n.links)
        n.links = NULL
    free(gone)
    return True

cdef char *_name(Node *n, const char *path) noexcept nogil:
    """``n``'s own string equal to ``path``, or NULL."""
    cdef uint32_t i
    if strcmp(n.path, path) == 0:
        return n.path
    for i in range(n.nlinks):
        if strcmp(n.links[i], path) == 0:
            return n.links[i]
    return NULL

cdef void _rename_name(Node *n, const char *old, const char *new) noexcept nogil:
    """Replace name ``old`` of ``n`` with ``new`` in place (once: a name held twice folds)."""
    cdef uint32_t i
    cdef char *s
    if _name(n, new) != NULL:
        _drop_name(n, old)
        return
    s = _dup(new)
    if s == NULL:
        return
    if strcmp(n.path, old) == 0:
        free(n.path)
        n.path = s
        return
    for i in range(n.nlinks):
        if strcmp(n.links[i], old) == 0:
            free(n.links[i])
            n.links[i] = s
            return
    free(s)


cdef void _free_node(Node *n) noexcept nogil:
    cdef uint32_t i
    for i in range(n.nlinks):
        free(n.links[i])
    free(n.links)
    free(n.path)
    free(n)


cdef int _decimal(char *out, uint64_t v) noexcept nogil:
    """``v`` in decimal at ``out`` (no NUL): the number of digits."""
    cdef char tmp[24]
    cdef int k = 0
    cdef int i
    while True:
        tmp[k] = <char>(48 + v % 10)
        k += 1
        v //= 10
        if v == 0:
            break
    for i in range(k):
        out[i] = tmp[k - 1 - i]
    return k
