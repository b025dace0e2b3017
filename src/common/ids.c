/* placeholder: replaced by the module's implementation. */
typedef int ldt_placeholder_t;
