// Prints graphql-js's full introspection query (the one GraphiQL and codegen tools send,
// with every option on) so tests/http_spec.rs can check it fits the default query limits.
import { getIntrospectionQuery } from 'graphql';

console.log(
  getIntrospectionQuery({
    descriptions: true,
    specifiedByUrl: true,
    directiveIsRepeatable: true,
    schemaDescription: true,
    inputValueDeprecation: true,
    oneOf: true,
  }),
);
