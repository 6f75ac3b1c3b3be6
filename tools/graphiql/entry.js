// What the GraphiQL page's own script (web/static/graphiql/rollcall-graphiql.js) puts together.
import * as React from "react";
import { createRoot } from "react-dom/client";
import { GraphiQL } from "graphiql";
import { createGraphiQLFetcher } from "@graphiql/toolkit";

globalThis.RollcallGraphiQL = { React, createRoot, GraphiQL, createGraphiQLFetcher };
