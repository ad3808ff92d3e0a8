/** The same hop the dev router adds in front of ingest. */
interface FrontEnv {
  TARGET: Fetcher;
}

export default {
  async fetch(request, env) {
    return env.TARGET.fetch(request);
  },
} satisfies ExportedHandler<FrontEnv>;
